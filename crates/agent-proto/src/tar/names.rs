//! Entry names and link targets as raw bytes, checked to stay beneath the target directory.

/// The components of an entry name (`.` and empty ones dropped), or `None` when the name is
/// absolute or climbs with `..`.
pub(super) fn components(name: &[u8]) -> Option<Vec<&[u8]>> {
    if name.first() == Some(&b'/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts)
}

/// Whether a symlink at depth `depth` (components of its parent) with `target` resolves
/// beneath the root whatever the other links in the tree point to: relative, its `..`
/// only leading (so they climb real directories), and no more of them than `depth`.
pub(super) fn link_stays_inside(depth: usize, target: &[u8]) -> bool {
    if target.is_empty() || target.first() == Some(&b'/') {
        return false;
    }
    let mut ups = 0;
    let mut descended = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if descended => return false,
            b".." => ups += 1,
            _ => descended = true,
        }
    }
    ups <= depth
}

/// A name for messages: printable ASCII as is, other bytes escaped (lossless).
pub(super) fn display(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_drop_dots_and_refuse_climbing() {
        assert_eq!(components(b"./a//b/"), Some(vec![&b"a"[..], b"b"]));
        assert_eq!(components(b"a/../b"), None);
        assert_eq!(components(b"/a"), None);
        assert_eq!(components(b"."), Some(vec![]));
    }

    #[test]
    fn link_targets_climb_only_real_directories() {
        assert!(link_stays_inside(1, b"../b"));
        assert!(link_stays_inside(0, b"sub/./a"));
        assert!(!link_stays_inside(0, b".."));
        assert!(link_stays_inside(1, b".."), "a link to the root itself");
        assert!(!link_stays_inside(1, b"../../x"));
        assert!(!link_stays_inside(0, b"l/../x"), ".. after a possible link");
        assert!(!link_stays_inside(3, b"/etc"));
        assert!(!link_stays_inside(3, b""));
    }
}
