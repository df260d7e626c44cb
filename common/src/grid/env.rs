//! `${VAR}` and `${VAR:-default}` in grid strings, read from the environment
//! when the grid is loaded, so one grid file works on several machines.

/// Expand `${VAR}` and `${VAR:-default}` in `s` using `lookup` (an empty
/// value counts as unset).
pub(crate) fn expand_env(
    s: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a variable name"));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_defaults_and_errors() {
        let look = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("${A}/y", look).unwrap(), "x/y");
        assert_eq!(expand_env("${B:-d}/y", look).unwrap(), "d/y");
        assert!(expand_env("${B}", look)
            .unwrap_err()
            .contains("B is not set"));
        assert!(expand_env("${A", look).is_err());
        assert!(expand_env("${A B}", look).is_err());
    }
}
