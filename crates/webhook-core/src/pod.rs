//! The pod as the admission core reads it: a minimal borrowed model of what the mutation needs
//! (names, commands, mounts, users, owners, annotations), parsed in the request's single pass;
//! everything else in the pod is skipped while parsing.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Deserializer, de};
use serde_json::value::RawValue;

/// A JSON string, borrowed from the input unless it contains escapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `metadata.annotations` as a list of pairs (no hashing; pods carry a handful). `null` and
/// absence both read as empty; `present` tells them apart from `{}` for the patch.
#[derive(Clone, Debug, Default)]
pub struct Annotations<'a> {
    pub pairs: Vec<(Text<'a>, Text<'a>)>,
    pub present: bool,
}

impl<'a> Annotations<'a> {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Annotations<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Annotations<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Annotations::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Annotations::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(entry) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    pairs.push(entry);
                }
                Ok(Annotations { pairs, present: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// The parts of `metadata` the webhook reads. `ownerReferences` stays raw until needed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodMeta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default, rename = "generateName")]
    pub generate_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub annotations: Annotations<'a>,
    #[serde(borrow, default, rename = "ownerReferences")]
    pub owner_references: Option<&'a RawValue>,
}

impl PodMeta<'_> {
    /// Whether an owner reference has kind `Job`.
    pub fn owned_by_job(&self) -> bool {
        #[derive(Deserialize)]
        struct Owner<'a> {
            #[serde(borrow, default)]
            kind: Option<Text<'a>>,
        }
        let Some(raw) = self.owner_references else {
            return false;
        };
        serde_json::from_str::<Option<Vec<Owner<'_>>>>(raw.get())
            .ok()
            .flatten()
            .is_some_and(|owners| {
                owners
                    .iter()
                    .any(|o| o.kind.as_ref().is_some_and(|k| k.as_str() == "Job"))
            })
    }
}

/// The parts of `spec` the mutation reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodSpecView<'a> {
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default, rename = "initContainers")]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<NamedView<'a>>>,
    #[serde(default, rename = "securityContext")]
    pub security_context: Option<PodSecurityView>,
    #[serde(default, rename = "shareProcessNamespace")]
    pub share_process_namespace: Option<bool>,
    #[serde(borrow, default, rename = "restartPolicy")]
    pub restart_policy: Option<Text<'a>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerView<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub command: Option<Vec<Text<'a>>>,
    #[serde(borrow, default, rename = "volumeMounts")]
    pub volume_mounts: Option<Vec<MountView<'a>>>,
    #[serde(default, rename = "securityContext")]
    pub security_context: Option<ContainerSecurityView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NamedView<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct MountView<'a> {
    #[serde(borrow, default, rename = "mountPath")]
    pub mount_path: Option<Text<'a>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodSecurityView {
    #[serde(default, rename = "runAsUser")]
    pub run_as_user: Option<i64>,
    #[serde(default, rename = "fsGroup")]
    pub fs_group: Option<i64>,
    #[serde(default, rename = "supplementalGroups")]
    pub supplemental_groups: Option<Vec<i64>>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct ContainerSecurityView {
    #[serde(default, rename = "runAsUser")]
    pub run_as_user: Option<i64>,
}

/// What the mutation sees of a pod.
#[derive(Clone, Debug, Default)]
pub struct PodView<'a> {
    pub meta: PodMeta<'a>,
    pub spec: PodSpecView<'a>,
    /// The pod runs to completion: owned by a Job, a Job/CronJob template, or `restartPolicy`
    /// `Never`/`OnFailure`. It never gets a classic sidecar.
    pub runs_to_completion: bool,
}

impl<'a> PodView<'a> {
    pub fn containers(&self) -> &[ContainerView<'a>] {
        self.spec.containers.as_deref().unwrap_or_default()
    }
    pub fn init_containers(&self) -> &[ContainerView<'a>] {
        self.spec.init_containers.as_deref().unwrap_or_default()
    }
}
