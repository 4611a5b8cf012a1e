#include <cblas.h>

// LAPACK routines that libopenblas also exports (Fortran calling convention, column-major,
// blasint = int in this build). Used by GPTQ for the Cholesky factor of the inverse Hessian.
void dpotrf_(const char *uplo, const blasint *n, double *a, const blasint *lda, blasint *info);
void dpotri_(const char *uplo, const blasint *n, double *a, const blasint *lda, blasint *info);
void dtrtri_(const char *uplo, const char *diag, const blasint *n, double *a, const blasint *lda, blasint *info);
