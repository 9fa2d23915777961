//! The one tenant rule: a sample that arrives with a tenant's credential
//! carries that tenant as its `tenant` label, and any `tenant` label the
//! sender wrote is replaced; without a tenant, labels pass as sent.

pub use tidemark_engine::ingest::TENANT_LABEL;

/// `labels` under the tenant rule: a sender's own `tenant` label is dropped
/// when `tenant` is set, and `tenant` is added.
pub fn apply<'a, I>(
    labels: I,
    tenant: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, &'a str)> + Clone
where
    I: Iterator<Item = (&'a str, &'a str)> + Clone,
{
    labels
        .filter(move |(name, _)| !(tenant.is_some() && *name == TENANT_LABEL))
        .chain(tenant.map(|t| (TENANT_LABEL, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_replaces_the_senders_label() {
        let labels = [("job", "a"), ("tenant", "forged")];
        let got: Vec<_> = apply(labels.into_iter(), Some("acme")).collect();
        assert_eq!(got, [("job", "a"), ("tenant", "acme")]);
        let got: Vec<_> = apply(labels.into_iter(), None).collect();
        assert_eq!(got, labels);
    }
}
