//! Weighted choice among route destinations, shared by the outbound and
//! inbound routers.

/// A weighted choice: `pick` (any counter or random value) modulo the total
/// weight selects an item; with no weights, the first item.
pub fn pick_weighted<T>(items: &[T], weight: impl Fn(&T) -> u32, pick: u64) -> Option<&T> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return items.first();
    }
    let mut n = pick % total;
    for item in items {
        let w = u64::from(weight(item));
        if n < w {
            return Some(item);
        }
        n -= w;
    }
    items.last()
}
