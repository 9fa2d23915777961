//! Who is asking, and what they may do. A bearer token (`--token-file`)
//! names a [`Principal`]: a [`Role`] and, for all but admins, optionally a
//! tenant. Without a token file every request is the local admin, and the
//! server listens on loopback only (see `docs/security.md`).
//!
//! Every route and gRPC method needs one [`Scope`]; a role has a fixed set
//! of scopes. A principal with a tenant sees only its tenant's pipelines,
//! outputs and data, on every read and control path.

use std::fmt;

use serde::Serialize;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, on every tenant's pipelines.
    Admin,
    /// Its tenant's pipelines, outputs and data: apply, list, get, delete,
    /// subscribe, ingest.
    Tenant,
    /// Ingest only (remote-write, OTLP, the ingest service).
    Ingest,
    /// Read only: list and get pipelines, subscribe to outputs (and
    /// `/metrics`, when it has no tenant).
    Read,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "admin" => Role::Admin,
            "tenant" => Role::Tenant,
            "ingest" => Role::Ingest,
            "read" => Role::Read,
            _ => return None,
        })
    }

    /// The word used in the token file and in messages.
    pub fn word(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Tenant => "tenant",
            Role::Ingest => "ingest",
            Role::Read => "read",
        }
    }
}

/// What a route or method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Apply or delete pipelines.
    Control,
    /// List and get pipelines, list outputs, subscribe to them.
    Read,
    /// Send samples.
    Ingest,
    /// Read `/metrics` (every pipeline's counters).
    Metrics,
}

impl Scope {
    /// What the scope lets a caller do, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Scope::Control => "apply or delete pipelines, or make or expire silences",
            Scope::Read => "read pipelines or their outputs",
            Scope::Ingest => "send samples",
            Scope::Metrics => "read /metrics",
        }
    }
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its role.
    pub role: Role,
    /// Its tenant: its samples get `tenant="..."`, and it sees only that
    /// tenant's pipelines. `None`: every tenant's (admins, and `ingest` or
    /// `read` tokens without a tenant).
    pub tenant: Option<String>,
}

impl Principal {
    /// The caller of a server without tokens (reachable on loopback only,
    /// unless the operator said otherwise).
    pub fn local_admin() -> Principal {
        Principal {
            role: Role::Admin,
            tenant: None,
        }
    }

    /// Whether the role grants `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        match (self.role, scope) {
            (Role::Admin, _) => true,
            (Role::Tenant, Scope::Metrics) => false,
            (Role::Tenant, _) => true,
            (Role::Ingest, scope) => scope == Scope::Ingest,
            (Role::Read, Scope::Read) => true,
            (Role::Read, Scope::Metrics) => self.tenant.is_none(),
            (Role::Read, _) => false,
        }
    }

    /// Why `scope` is refused, or nothing.
    pub fn require(&self, scope: Scope) -> Result<(), String> {
        if self.may(scope) {
            return Ok(());
        }
        Err(format!(
            "this token's role ({}{}) may not {}",
            self.role.word(),
            self.tenant
                .as_deref()
                .map(|t| format!(", tenant {t}"))
                .unwrap_or_default(),
            scope.what()
        ))
    }

    /// Whether it may see a pipeline owned by `owner` (`None`: applied by
    /// an admin or from the server's pipelines directory).
    pub fn sees(&self, owner: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(t) => owner == Some(t.as_str()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role.word())?;
        if let Some(t) = &self.tenant {
            write!(f, " of tenant {t}")?;
        }
        Ok(())
    }
}

/// Tokens shorter than this are warned about.
const MIN_LENGTH: usize = 16;

/// Bearer tokens and what they protect.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Accepted tokens, with whom each names; empty means no
    /// authentication (every request is the local admin).
    pub tokens: Vec<(String, Principal)>,
    /// Also require a token for `/metrics` (health checks stay open).
    pub protect_metrics: bool,
}

impl Auth {
    /// Reads tokens from a file, one a line: `TOKEN [role=ROLE]
    /// [tenant=NAME]`, or `TOKEN NAME` for a tenant's token. A token alone
    /// is an admin's. Blank lines and `#` comments are ignored; tokens are
    /// never logged.
    pub fn from_file(path: &std::path::Path, protect_metrics: bool) -> anyhow::Result<Auth> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
        let tokens = Auth::parse(&text)
            .map_err(|e| anyhow::anyhow!("the token file {}: {e}", path.display()))?;
        let short = tokens.iter().filter(|(t, _)| t.len() < MIN_LENGTH).count();
        if short > 0 {
            tracing::warn!(
                file = %path.display(),
                tokens = short,
                "Tokens shorter than {MIN_LENGTH} characters can be guessed: make them with `openssl rand -hex 32`."
            );
        }
        Ok(Auth {
            tokens,
            protect_metrics,
        })
    }

    /// One token naming the local admin (the dashboard of `tidemark run`).
    pub fn single(token: String) -> Auth {
        Auth {
            tokens: vec![(token, Principal::local_admin())],
            protect_metrics: false,
        }
    }

    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Vec<(String, Principal)>, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| format!("line {}: {m}", n + 1);
            let mut parts = line.split_whitespace();
            let token = parts.next().unwrap_or_default().to_owned();
            let (mut role, mut tenant) = (None, None);
            for part in parts {
                match part.split_once('=') {
                    Some(("role", r)) => {
                        role = Some(Role::parse(r).ok_or_else(|| {
                            at(format!(
                                "unknown role {r:?} (expected admin, tenant, ingest or read)"
                            ))
                        })?);
                    }
                    Some(("tenant", t)) if !t.is_empty() => tenant = Some(t.to_owned()),
                    Some((key, _)) => {
                        return Err(at(format!(
                            "unknown field {key:?} (expected role= or tenant=)"
                        )));
                    }
                    None if tenant.is_none() => tenant = Some(part.to_owned()),
                    None => return Err(at(format!("unexpected {part:?}"))),
                }
            }
            let role = role.unwrap_or(if tenant.is_some() {
                Role::Tenant
            } else {
                Role::Admin
            });
            match (role, &tenant) {
                (Role::Admin, Some(_)) => {
                    return Err(at(
                        "an admin token has no tenant (use role=tenant for a tenant's token)"
                            .into(),
                    ));
                }
                (Role::Tenant, None) => return Err(at("a tenant token needs tenant=NAME".into())),
                _ => {}
            }
            if tokens.iter().any(|(t, _)| *t == token) {
                return Err(at("this token is listed twice".into()));
            }
            tokens.push((token, Principal { role, tenant }));
        }
        if tokens.is_empty() {
            return Err("it has no tokens".into());
        }
        Ok(tokens)
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Who an `Authorization` header value names: `None` if it names no one
    /// (missing, another scheme, a wrong token). Without tokens, everyone is
    /// the local admin.
    pub fn check(&self, header: Option<&str>) -> Option<Principal> {
        if !self.enabled() {
            return Some(Principal::local_admin());
        }
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let (scheme, token) = header?.trim_start().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = token.trim().as_bytes();
        // Compare every token in full so timing reveals nothing.
        let mut found = None;
        for (i, (t, _)) in self.tokens.iter().enumerate() {
            if constant_time_eq(t.as_bytes(), given) {
                found = Some(i);
            }
        }
        found.map(|i| self.tokens[i].1.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: 32 bytes from the operating system, as hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-admin";
    const T: &str = "0123456789abcdef-acme";

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_tokens_are_exact() {
        let auth = Auth {
            tokens: Auth::parse(&format!("{A}\n{T} acme\n")).unwrap(),
            protect_metrics: false,
        };
        for header in [
            format!("Bearer {A}"),
            format!("bearer {A}"),
            format!("BEARER  {A} "),
        ] {
            assert_eq!(
                auth.check(Some(&header)),
                Some(Principal::local_admin()),
                "{header}"
            );
        }
        assert_eq!(
            auth.check(Some(&format!("bearer {T}"))),
            Some(Principal {
                role: Role::Tenant,
                tenant: Some("acme".into())
            })
        );
        for header in [
            format!("Basic {A}"),
            format!("Bearer {}", &A[1..]),
            format!("Bearer{A}"),
            A.to_owned(),
            String::new(),
        ] {
            assert_eq!(auth.check(Some(&header)), None, "{header}");
        }
        assert_eq!(auth.check(None), None);
        assert_eq!(
            Auth::default().check(None),
            Some(Principal::local_admin()),
            "without tokens everyone is the local admin"
        );
    }

    #[test]
    fn token_lines_name_roles_and_tenants_and_mistakes_are_located() {
        let parsed = Auth::parse(&format!(
            "# comment\n{A}\n{T} acme\n{T}2 role=ingest tenant=acme\n{T}3 role=read\n"
        ))
        .unwrap();
        let roles: Vec<(Role, Option<&str>)> = parsed
            .iter()
            .map(|(_, p)| (p.role, p.tenant.as_deref()))
            .collect();
        assert_eq!(
            roles,
            [
                (Role::Admin, None),
                (Role::Tenant, Some("acme")),
                (Role::Ingest, Some("acme")),
                (Role::Read, None)
            ]
        );
        for (text, error) in [
            (
                &format!("\n{A} role=root\n"),
                "line 2: unknown role \"root\"",
            ),
            (
                &format!("{A} role=admin tenant=x\n"),
                "an admin token has no tenant",
            ),
            (&format!("{A} role=tenant\n"), "needs tenant=NAME"),
            (&format!("{A} scope=x\n"), "unknown field \"scope\""),
            (&format!("{A}\n{A}\n"), "line 2: this token is listed twice"),
            (&"# only a comment\n".to_owned(), "no tokens"),
        ] {
            let e = Auth::parse(text).unwrap_err();
            assert!(e.contains(error), "{text:?}: {e}");
        }
    }

    #[test]
    fn roles_grant_scopes_and_tenants_see_their_own() {
        let p = |role, tenant: Option<&str>| Principal {
            role,
            tenant: tenant.map(str::to_owned),
        };
        let scopes = [Scope::Control, Scope::Read, Scope::Ingest, Scope::Metrics];
        let grants = |p: &Principal| scopes.map(|s| p.may(s));
        assert_eq!(grants(&p(Role::Admin, None)), [true, true, true, true]);
        assert_eq!(
            grants(&p(Role::Tenant, Some("a"))),
            [true, true, true, false]
        );
        assert_eq!(grants(&p(Role::Ingest, None)), [false, false, true, false]);
        assert_eq!(grants(&p(Role::Read, None)), [false, true, false, true]);
        assert_eq!(
            grants(&p(Role::Read, Some("a"))),
            [false, true, false, false]
        );
        assert!(p(Role::Tenant, Some("a")).sees(Some("a")));
        assert!(!p(Role::Tenant, Some("a")).sees(Some("b")));
        assert!(!p(Role::Tenant, Some("a")).sees(None));
        assert!(p(Role::Read, None).sees(Some("b")));
    }
}
