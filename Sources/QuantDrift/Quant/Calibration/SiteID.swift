import Foundation

/// One place where activations enter linear layers: a (layer, site) pair. The head input has
/// layer index = layer count.
public struct SiteID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var layer: Int
    public var site: LinearSite

    public init(_ layer: Int, _ site: LinearSite) {
        self.layer = layer
        self.site = site
    }

    public static func < (a: SiteID, b: SiteID) -> Bool {
        a.layer != b.layer ? a.layer < b.layer : a.site.order < b.site.order
    }

    public var description: String { "\(layer).\(site.rawValue)" }

    /// Every site of a model, in forward order, with the width of its input.
    public static func all(_ c: ModelConfig) -> [(id: SiteID, width: Int)] {
        var out: [(SiteID, Int)] = []
        for l in 0..<c.layerCount {
            out.append((SiteID(l, .attentionInput), c.dim))
            out.append((SiteID(l, .attentionOutput), c.qDim))
            out.append((SiteID(l, .feedForwardInput), c.dim))
            out.append((SiteID(l, .feedForwardDownInput), c.hiddenDim))
        }
        out.append((SiteID(c.layerCount, .headInput), c.dim))
        return out
    }
}

extension LinearSite {
    var order: Int { LinearSite.allCases.firstIndex(of: self)! }
}
