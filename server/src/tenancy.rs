//! Who may see and change which pipeline, and what a pipeline applied over
//! the API may touch: a tenant's token sees, replaces and deletes only its
//! tenant's pipelines (others' do not exist for it), runs at most
//! `quotas.pipelines` of them, and every pipeline applied over the API is
//! checked against the server's `access` policy and `quotas.max_queue`.

use tidemark_pipelines::compile::Diagnostic;
use tidemark_pipelines::plan::Plan;

use crate::auth::Principal;
use crate::control::{Control, Status};

impl Control {
    /// Whether `principal` may see the pipeline `name` (false if there is
    /// none).
    pub fn may_see(&self, principal: &Principal, name: &str) -> bool {
        self.owner(name)
            .is_some_and(|owner| principal.sees(owner.as_deref()))
    }

    /// The pipelines `principal` may see.
    pub fn list_for(&self, principal: &Principal) -> Vec<Status> {
        self.list()
            .into_iter()
            .filter(|s| principal.sees(s.tenant.as_deref()))
            .collect()
    }

    /// One pipeline, if `principal` may see it.
    pub fn get_for(&self, principal: &Principal, name: &str) -> Option<Status> {
        self.get(name)
            .filter(|s| principal.sees(s.tenant.as_deref()))
    }

    /// Compiles a pipeline sent over the API and checks it against the
    /// server's access policy and its queue and memory quotas.
    pub fn compile_request(&self, text: &str) -> Result<Plan, Vec<Diagnostic>> {
        let plan = tidemark_pipelines::compile("request", text)?;
        let refused = self
            .access
            .check("request", text, &plan, self.quotas.bounds());
        if refused.is_empty() {
            return Ok(plan);
        }
        for d in &refused {
            let quota = if d.message.contains("quotas.max_queue") {
                "max_queue"
            } else if d.message.contains("quotas.max_memory_mb") {
                "max_memory_mb"
            } else {
                "access"
            };
            self.quotas.refused(quota);
        }
        Err(refused)
    }

    /// Whether `principal` may apply a pipeline called `name`: the owner
    /// it will have, or why not (`true` for a name another tenant holds,
    /// `false` for a quota).
    pub fn may_apply(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Option<String>, (bool, String)> {
        let existing = self.owner(name);
        let replacing = existing.is_some();
        if let Some(owner) = &existing
            && !principal.sees(owner.as_deref())
        {
            return Err((
                true,
                format!("the name {name:?} is taken by a pipeline you cannot see: choose another"),
            ));
        }
        // An admin replacing a tenant's pipeline keeps it the tenant's.
        let owner = match (&principal.tenant, existing) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(owner)) => owner,
            (None, None) => None,
        };
        if !replacing && self.owned_by(owner.as_deref()) >= self.quotas.pipelines {
            self.quotas.refused("pipelines");
            let who = owner
                .as_deref()
                .map_or("pipelines without a tenant".to_owned(), |t| {
                    format!("tenant {t}")
                });
            return Err((
                false,
                format!(
                    "{who} already runs {} pipelines, its quota (quotas.pipelines): delete one first",
                    self.quotas.pipelines
                ),
            ));
        }
        Ok(owner)
    }
}
