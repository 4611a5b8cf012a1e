import Foundation

/// An orthogonal rotation R of order n, applied to vectors in place (x ← R·x).
///
/// Where n = m·2^k with m = 1 or m a Paley order (q + 1, q a prime ≡ 3 mod 4), R is the Hadamard
/// matrix H_m ⊗ H_{2^k} / √n: Paley's construction for H_m, Sylvester's for H_{2^k}. Their
/// Kronecker product is itself a Hadamard matrix (entries ±1/√n), so every rotated value mixes
/// all n inputs with equal weight, which is what spreads an outlier channel. It is applied as a
/// fast Walsh–Hadamard transform over each chunk of 2^k followed by the m×m ±1 mix across chunks:
/// O(n(k + m)) per vector. The smallest such m is used. Common widths factor this way (576 =
/// 72·8, 1536 = 12·128, 640 = 20·32, 960 = 60·16, 8960 = 140·64). Where none does, R is a seeded
/// random orthogonal matrix (Gram–Schmidt of Gaussian columns in Double), applied densely.
public struct Rotation: Sendable {
    public enum Kind: Sendable, Equatable {
        /// H_paley ⊗ H_sylvester / √n (paley = 1: Sylvester alone).
        case hadamard(paley: Int, sylvester: Int)
        /// Random orthogonal from a seed.
        case random(seed: UInt64)
    }

    public let order: Int
    public let kind: Kind
    /// Paley's H_m, ±1 row-major (m = 1: [1]); the dense random matrix for `.random`.
    private let matrix: [Float]

    public init(order n: Int, seed: UInt64 = 0x5EED) {
        precondition(n >= 1)
        order = n
        if let m = Self.paleyFactor(n) {
            kind = .hadamard(paley: m, sylvester: n / m)
            matrix = m == 1 ? [1] : Self.paley(m)
        } else {
            kind = .random(seed: seed)
            matrix = Self.randomOrthogonal(n, seed: seed)
        }
    }

    /// "Hadamard 576 = Paley 72 ⊗ Sylvester 8", or the random matrix and its seed.
    public var summary: String {
        switch kind {
        case .hadamard(1, _): "Hadamard \(order) (Sylvester)"
        case .hadamard(let m, let s): "Hadamard \(order) = Paley \(m) ⊗ Sylvester \(s)"
        case .random(let seed): "random orthogonal \(order) (no Hadamard factoring; seed \(seed))"
        }
    }

    /// The smallest m with n = m·2^k and m = 1 or a Paley order.
    static func paleyFactor(_ n: Int) -> Int? {
        var m = n
        while m % 2 == 0 { m /= 2 }
        // m is now odd; candidate orders are m·2^j.
        while m <= n {
            if m == 1 { return 1 }
            if m % 4 == 0, isPrime(m - 1), (m - 1) % 4 == 3 { return m }
            m *= 2
        }
        return nil
    }

    static func isPrime(_ p: Int) -> Bool {
        guard p >= 2 else { return false }
        var d = 2
        while d * d <= p {
            if p % d == 0 { return false }
            d += 1
        }
        return true
    }

    /// Paley I: q = m − 1 prime, q ≡ 3 (mod 4); H = I + S with S = [[0, 1ᵀ], [−1, Q]] and Q the
    /// Jacobsthal matrix Q[i][j] = χ(j − i) (χ the quadratic character mod q).
    static func paley(_ m: Int) -> [Float] {
        let q = m - 1
        var square = [Bool](repeating: false, count: q)
        for x in 1..<q { square[(x * x) % q] = true }
        func chi(_ a: Int) -> Float {
            let r = ((a % q) + q) % q
            return r == 0 ? 0 : (square[r] ? 1 : -1)
        }
        var h = [Float](repeating: 0, count: m * m)
        for i in 0..<m {
            for j in 0..<m {
                let s: Float
                if i == 0 { s = j == 0 ? 0 : 1 } else if j == 0 { s = -1 } else { s = chi(j - i) }
                h[i * m + j] = s + (i == j ? 1 : 0)
            }
        }
        return h
    }

    static func randomOrthogonal(_ n: Int, seed: UInt64) -> [Float] {
        var state = seed
        func uniform() -> Double {
            // SplitMix64 → (0, 1).
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return (Double(z >> 11) + 0.5) / Double(1 << 53)
        }
        var a = [Double](repeating: 0, count: n * n)  // row i = basis vector i
        for i in 0..<(n * n) {
            let u1 = uniform(), u2 = uniform()
            a[i] = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        }
        for i in 0..<n {
            for j in 0..<i {
                var dot = 0.0
                for c in 0..<n { dot += a[i * n + c] * a[j * n + c] }
                for c in 0..<n { a[i * n + c] -= dot * a[j * n + c] }
            }
            var norm = 0.0
            for c in 0..<n { norm += a[i * n + c] * a[i * n + c] }
            let inv = 1 / norm.squareRoot()
            for c in 0..<n { a[i * n + c] *= inv }
        }
        return a.map { Float($0) }
    }

    /// x ← R·x for `rows` vectors of `order` (contiguous), using `scratch` (≥ order values). Float
    /// at run time (the online rotation); Double when folding into weights, so that the folded
    /// matrices are the rotated ones correctly rounded.
    public func apply<T: BinaryFloatingPoint>(_ x: UnsafeMutablePointer<T>, rows: Int, scratch: UnsafeMutablePointer<T>) {
        let n = order
        matrix.withUnsafeBufferPointer { h in
            for r in 0..<rows {
                let v = x + r * n
                switch kind {
                case .random:
                    for i in 0..<n {
                        var s: T = 0
                        for j in 0..<n { s += T(h[i * n + j]) * v[j] }
                        scratch[i] = s
                    }
                    v.update(from: scratch, count: n)
                case .hadamard(let m, let len):
                    for a in 0..<m { Self.walshHadamard(v + a * len, len) }
                    if m > 1 {
                        // out chunk a = Σ_a' H_m[a][a'] · chunk a' (entries ±1).
                        scratch.update(repeating: 0, count: n)
                        for a in 0..<m {
                            let o = scratch + a * len
                            for b in 0..<m {
                                let src = v + b * len
                                if h[a * m + b] > 0 {
                                    for i in 0..<len { o[i] += src[i] }
                                } else {
                                    for i in 0..<len { o[i] -= src[i] }
                                }
                            }
                        }
                        v.update(from: scratch, count: n)
                    }
                    let scale = 1 / T(n).squareRoot()
                    for i in 0..<n { v[i] *= scale }
                }
            }
        }
    }

    /// The rotation as a dense matrix (row-major), for tests.
    public func dense() -> [Float] {
        var out = [Float](repeating: 0, count: order * order)
        var scratch = [Float](repeating: 0, count: order)
        var e = [Float](repeating: 0, count: order)
        for j in 0..<order {
            e.withUnsafeMutableBufferPointer { ep in
                ep.update(repeating: 0)
                ep[j] = 1
                scratch.withUnsafeMutableBufferPointer { apply(ep.baseAddress!, rows: 1, scratch: $0.baseAddress!) }
            }
            for i in 0..<order { out[i * order + j] = e[i] }
        }
        return out
    }

    /// Unscaled Walsh–Hadamard transform of `n` (a power of 2) values in place.
    @inline(__always)
    static func walshHadamard<T: BinaryFloatingPoint>(_ v: UnsafeMutablePointer<T>, _ n: Int) {
        var h = 1
        while h < n {
            var i = 0
            while i < n {
                for j in i..<(i + h) {
                    let a = v[j], b = v[j + h]
                    v[j] = a + b
                    v[j + h] = a - b
                }
                i += 2 * h
            }
            h *= 2
        }
    }
}
