import CKernels

/// Splits `count` outputs into `parts` contiguous ranges (multiples of `alignment`) and runs
/// `body` on each, part 0 on this thread and the others on the kernel pool's spinning workers
/// (`qd_pool_run`: no thread start per call, so a 20 µs product can still be split). Callers
/// compute every output the same way whichever range holds it, so results do not depend on
/// `parts`. `body` runs concurrently with itself: it must write only its own range.
@inline(__always)
func splitOutputs(_ count: Int, parts: Int, alignment: Int = 1, _ body: (Range<Int>) -> Void) {
    splitOutputParts(count, parts: parts, alignment: alignment) { _, range in body(range) }
}

/// `splitOutputs` that also tells `body` which part it runs (0..<parts), for callers that give
/// each part its own scratch space.
@inline(__always)
func splitOutputParts(_ count: Int, parts: Int, alignment: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    guard parts > 1, count >= 2 * alignment else { return body(0, 0..<count) }
    let units = (count + alignment - 1) / alignment
    let per = (units + parts - 1) / parts * alignment
    withoutActuallyEscaping(body) { body in
        var job = SplitJob(count: count, per: per, body: body)
        withUnsafeMutablePointer(to: &job) { p in
            qd_pool_run({ ctx, part, _ in
                let job = ctx!.assumingMemoryBound(to: SplitJob.self).pointee
                let lo = min(job.count, Int(part) * job.per)
                let hi = min(job.count, lo + job.per)
                if lo < hi { job.body(Int(part), lo..<hi) }
            }, p, Int32(parts))
        }
    }
}

private struct SplitJob {
    let count: Int
    let per: Int
    let body: (Int, Range<Int>) -> Void
}
