//! Model choice: which models users may pick and which answers when a request or conversation
//! names none — the user's preferred model, else the admin's default, else the loaded model.
//! The admin's policy (`settings.models`) is kept in memory and replaced on write; users'
//! preferences are read through a moka cache invalidated on write, so no request reads SQLite
//! for them. Other replicas hear of each write ([`Event::Settings`], [`Event::Preferences`])
//! and drop or reload their copies.

use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::{Caller, ChatService};
use crate::auth::Principal;
use crate::cluster::events::Event;
use crate::store::preferences::Preferences;
use crate::store::{Role, StoreError};

/// What admins decide about models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelPolicy {
    /// The model for requests that name none (and users with no preference).
    pub default_model: Option<String>,
    /// The models non-admin users may use; `None`: every model.
    pub allowed_models: Option<Vec<String>>,
}

/// The settings key the policy is stored under.
pub const POLICY_KEY: &str = "models";

/// Why a model may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The model `{model}` is not available to you; choose one of: {}", allowed.join(", "))]
pub struct NotAllowed {
    /// The model asked for.
    pub model: String,
    /// The ones that may be used.
    pub allowed: Vec<String>,
}

pub(super) type PolicyCell = RwLock<ModelPolicy>;
pub(super) type PreferenceCache = moka::sync::Cache<i64, Arc<Preferences>>;

impl ChatService {
    /// The admin policy now.
    pub fn policy(&self) -> ModelPolicy {
        self.inner
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Load what admins set at run time (at startup): the model policy and per-user limits.
    pub async fn load_settings(&self) -> Result<(), StoreError> {
        self.inner.admission.load_overrides().await?;
        if let Some(v) = self.inner.store.setting(POLICY_KEY).await? {
            if let Ok(p) = serde_json::from_value::<ModelPolicy>(v) {
                *self
                    .inner
                    .policy
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = p;
            }
        }
        Ok(())
    }

    /// Store and apply a new policy (its models must exist; the API checks).
    pub async fn set_policy(&self, policy: ModelPolicy) -> Result<(), StoreError> {
        let value = serde_json::to_value(&policy).unwrap_or_default();
        self.inner.store.put_setting(POLICY_KEY, value).await?;
        *self
            .inner
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner) = policy;
        self.inner.events.publish(Event::Settings);
        Ok(())
    }

    /// `user_id`'s preferences (cached).
    pub async fn preferences(&self, user_id: i64) -> Result<Arc<Preferences>, StoreError> {
        if let Some(p) = self.inner.prefs.get(&user_id) {
            return Ok(p);
        }
        let p = Arc::new(self.inner.store.preferences(user_id).await?);
        self.inner.prefs.insert(user_id, p.clone());
        Ok(p)
    }

    /// Replace `user_id`'s preferences (the API validates them first).
    pub async fn set_preferences(&self, user_id: i64, p: Preferences) -> Result<(), StoreError> {
        self.inner.store.put_preferences(user_id, p).await?;
        self.inner.prefs.invalidate(&user_id);
        self.inner
            .events
            .publish(Event::Preferences { user: user_id });
        Ok(())
    }

    /// The models `principal` may use: the policy's allowed models (every model when it names
    /// none); admins may use every model.
    pub fn allowed_models(&self, principal: &Principal) -> Vec<String> {
        let all: Vec<String> = self
            .inner
            .router
            .catalog()
            .into_iter()
            .map(|(m, _, _)| m.id)
            .collect();
        let is_admin =
            matches!(principal, Principal::User { user, .. } if user.role == Role::Admin);
        match self.policy().allowed_models {
            Some(allowed) if !is_admin => all.into_iter().filter(|m| allowed.contains(m)).collect(),
            _ => all,
        }
    }

    /// Refuse a model `principal` may not use.
    pub fn check_allowed(&self, principal: &Principal, model: &str) -> Result<(), NotAllowed> {
        let allowed = self.allowed_models(principal);
        if allowed.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(NotAllowed {
                model: model.to_string(),
                allowed,
            })
        }
    }

    /// The model for a request naming `requested` (`None` or empty: the caller's preferred
    /// model if they may still use it, else the admin's default, else the loaded model).
    pub async fn resolve_model(&self, caller: &Caller, requested: Option<&str>) -> Option<String> {
        if let Some(m) = requested.filter(|m| !m.is_empty()) {
            return Some(m.to_string());
        }
        if let Some(user_id) = caller.principal.user_id() {
            if let Ok(p) = self.preferences(user_id).await {
                if let Some(m) = p.model.as_deref() {
                    if self.check_allowed(&caller.principal, m).is_ok() {
                        return Some(m.to_string());
                    }
                }
            }
        }
        self.policy().default_model
    }
}
