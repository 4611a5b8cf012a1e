import CKernels

/// Which C kernel path a test exercises: the AVX2+FMA one (the default on this machine kind) or
/// the portable C twins, which run on CPUs without AVX2 and under QUANTDRIFT_PORTABLE_KERNELS=1.
///
/// The switch (`qd_set_portable_kernels`) is thread-local. Swift Testing runs tests in parallel,
/// so a process-wide flag flipped here would send whatever other test runs meanwhile down the
/// portable path. `run` sets it for the calling thread around a synchronous body (a synchronous
/// closure cannot move to another thread) and restores it afterwards, so no suite needs
/// `.serialized`. Code in the body that hands work to other threads runs that work on the default
/// path: the kernel tests use one-core scratch, so their products stay on the test's thread.
enum KernelPath: String, CaseIterable, Sendable, CustomStringConvertible {
    case avx2, portable

    var description: String { rawValue }

    func run<T>(_ body: () throws -> T) rethrows -> T {
        let previous = qd_set_portable_kernels(self == .portable ? 1 : 0)
        defer { qd_set_portable_kernels(previous) }
        return try body()
    }
}
