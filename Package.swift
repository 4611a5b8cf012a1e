// swift-tools-version:6.0
import PackageDescription

// MARK: - System libraries (apt: libopenblas-dev, libzstd-dev; found through pkg-config)

let systemLibraries: [Target] = [
    .systemLibrary(
        name: "COpenBLAS",
        pkgConfig: "openblas",
        providers: [.apt(["libopenblas-dev"])]
    ),
    .systemLibrary(
        name: "CZstd",
        pkgConfig: "libzstd",
        providers: [.apt(["libzstd-dev"])]
    ),
]

// MARK: - Library, CLI, tests

let package = Package(
    name: "QuantDrift",
    products: [
        .library(name: "QuantDrift", targets: ["QuantDrift"]),
        .executable(name: "quantdrift", targets: ["quantdrift"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: systemLibraries + [
        // Quantized SIMD kernels in C: AVX2 paths chosen at run time through target attributes,
        // so no compiler flags (and no unsafeFlags) are needed.
        .target(name: "CKernels"),
        .target(
            name: "QuantDrift",
            dependencies: ["COpenBLAS", "CZstd", "CKernels"],
            exclude: ["Report/report-schema.md"]
        ),
        // The commands (swift-argument-parser) in a library, so the tests can parse command lines
        // with `QuantDriftCLI.parseAsRoot`; the executable is only their entry point.
        .target(
            name: "QuantDriftCommands",
            dependencies: [
                "QuantDrift",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "quantdrift",
            dependencies: ["QuantDriftCommands"]
        ),
        .testTarget(
            name: "QuantDriftTests",
            dependencies: [
                "QuantDrift", "QuantDriftCommands",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            resources: [.copy("Fixtures")]
        ),
    ]
)
