import Foundation

/// First error thrown by concurrent work.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    func set(_ e: Error) {
        lock.lock()
        if error == nil { error = e }
        lock.unlock()
    }
}

/// Results written by concurrent workers into their own slots.
final class ResultBox<T>: @unchecked Sendable {
    private var slots: [T?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: T) {
        lock.lock()
        slots[i] = v
        lock.unlock()
    }
    func values() -> [T] { slots.map { $0! } }
}

/// Hands out work item indices in order to concurrent workers.
final class WorkQueue: @unchecked Sendable {
    private let count: Int
    private var next = 0
    private let lock = NSLock()
    init(count: Int) { self.count = count }
    func take() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard next < count else { return nil }
        next += 1
        return next - 1
    }
}
