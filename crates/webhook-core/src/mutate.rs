//! (pod view, [`InjectionSpec`], [`Config`]) → JSON Patch. Pure: no IO, no clock, no globals.
//!
//! [`mutate`] runs one function per phase: the mode, the target containers, name clashes, who
//! reads the files (and so the agent's user, group and the file modes), where the init step goes,
//! the agent containers; then the patch: volumes, supplemental group, mounts and exec wrapping,
//! agents, status. The pod is read through the borrowed model in [`crate::pod`].
//!
//! The patch only adds — whole arrays when absent, `/-` appends otherwise, `…/0` inserts when
//! the agent's init step goes first — with one exception: exec mode (`env-*` annotations)
//! replaces the `command` of each wrapped container. A name clash with the pod's own containers
//! or volumes is denied, never renamed. The status annotation is the last operation.

use std::borrow::Cow;

use inject_api::{
    AgentConfig, ChangeSignal, FileMode,
    annotations::{self as ann, Mode},
    command, env as agent_env, layout,
};
use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
        ExecAction, KeyToPath, PodSecurityContext, Probe, ResourceRequirements, SeccompProfile,
        SecretKeySelector, SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::api::resource::Quantity,
};

use crate::{
    config::{AgentUser, Auth, Config},
    patch::{PatchOp, pointer},
    pod::{ContainerView, PodView, Text},
    spec::{CA_FILE_NAME, CA_MOUNT_DIR, CA_VOLUME_NAME, Deny, InjectionSpec},
};

/// Name of the agent's one-shot init container (`init`, `init+sidecar`).
pub const INIT_CONTAINER: &str = "ps-agent-init";
/// Name of the long-running agent (`sidecar`, `init+sidecar`, `native-sidecar`).
pub const SIDECAR_CONTAINER: &str = "ps-agent";
/// Name of the init container that copies the agent binary for exec mode.
pub const COPY_CONTAINER: &str = "ps-agent-copy";

// ---------------------------------------------------------------------------------------------
// The mutation, one function per phase
// ---------------------------------------------------------------------------------------------

/// The patch for one pod, with the warnings it raised and the mode it chose.
#[derive(Debug)]
pub struct Mutation {
    pub patch: Vec<PatchOp>,
    pub warnings: Vec<String>,
    pub mode: Mode,
}

/// Who can read the files the agent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readers {
    /// Every reader runs as this non-root user: the agent runs as it too, files 0400.
    User(i64),
    /// Readers share a group: the agent runs as the configured user, files 0440. Either the
    /// pod's fsGroup, or (`added`) the agent's group, which the patch adds to the pod's
    /// `supplementalGroups` because the readers' users are unknown or differ.
    Group { gid: i64, added: bool },
    /// Only root readers: the agent runs as the configured user.
    AgentDefault,
    /// `agent.runAsUser: platform` and readers of unknown or different users: the platform
    /// assigns the users (the agent's and the unknown ones) and the pod's fsGroup; the agent
    /// gets no runAsUser, the files are 0440, no supplemental group is added.
    Platform,
}

/// A container of the pod: its index in `containers` or in `initContainers`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Init(usize),
    App(usize),
}

/// The pod's containers, found by name or by place.
struct Containers<'p, 'a> {
    apps: &'p [ContainerView<'a>],
    inits: &'p [ContainerView<'a>],
}

impl<'p, 'a> Containers<'p, 'a> {
    fn of(pod: &'p PodView<'a>) -> Result<Self, Deny> {
        let apps = pod.containers();
        if apps.is_empty() {
            return Err(Deny("the pod has no containers to inject into".to_owned()));
        }
        Ok(Containers {
            apps,
            inits: pod.init_containers(),
        })
    }

    fn find(&self, name: &str) -> Option<Place> {
        let position = |list: &[ContainerView<'_>]| list.iter().position(|c| c.name.as_str() == name);
        position(self.apps)
            .map(Place::App)
            .or_else(|| position(self.inits).map(Place::Init))
    }

    fn get(&self, place: Place) -> &'p ContainerView<'a> {
        match place {
            Place::App(i) => &self.apps[i],
            Place::Init(i) => &self.inits[i],
        }
    }

    /// The place named `name` in the list of annotation `key`, or a denial listing the names.
    fn named(&self, key: &str, name: &str) -> Result<Place, Deny> {
        self.find(name).ok_or_else(|| {
            let all = self
                .apps
                .iter()
                .chain(self.inits)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Deny::annotation(
                key,
                format!("the pod has no container named {name:?} (it has {all}); fix the list"),
            )
        })
    }
}

/// The containers that get the mount, and those whose command `ps-agent exec` wraps.
struct Targets {
    mounted: Vec<Place>,
    exec: Vec<Place>,
}

/// Builds the JSON Patch for an opted-in pod.
pub fn mutate(pod: &PodView<'_>, spec: &InjectionSpec, config: &Config) -> Result<Mutation, Deny> {
    let mut warnings = spec.warnings.clone();
    let containers = Containers::of(pod)?;
    let mode = choose_mode(pod, spec, config, &mut warnings)?;
    let targets = choose_targets(&containers, spec, &mut warnings)?;
    check_names(pod, &containers, spec, mode, config)?;
    let readers = choose_readers(pod, &containers, &targets.mounted, config)?;
    let agent = with_file_modes(spec, readers, &mut warnings);
    let first = init_step_first(
        pod,
        &containers,
        &targets.mounted,
        spec,
        mode,
        config,
        &mut warnings,
    )?;

    let agent_json = agent.to_json();
    let security = agent_security(readers, config);
    let ca_file = (config.password_safe.ca_bundle.as_ref()).map(|_| format!("{CA_MOUNT_DIR}/{CA_FILE_NAME}"));
    let agents = agent_containers(spec, mode, config, security, &agent_json, ca_file.as_deref());

    let mut patch = Vec::with_capacity(8 + targets.mounted.len() * 2);
    add_volumes(&mut patch, pod, config);
    add_supplemental_group(&mut patch, pod, readers);
    // Mounts and command rewrites use the original indices, so they come before inserts.
    add_mounts_and_exec(&mut patch, &containers, &targets, spec);
    add_agents(&mut patch, pod, &agents, first);
    add_status(&mut patch, pod);
    Ok(Mutation {
        patch,
        warnings,
        mode,
    })
}

/// The mode: the annotation's or the cluster's, adapted to a pod that runs to completion.
fn choose_mode(
    pod: &PodView<'_>,
    spec: &InjectionSpec,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<Mode, Deny> {
    let explicit = spec.mode.is_some();
    let mut mode = spec.mode.unwrap_or_else(|| config.default_mode());
    if pod.runs_to_completion && matches!(mode, Mode::Sidecar | Mode::InitSidecar) {
        let adapted = if config.injection.native_sidecars {
            Mode::NativeSidecar
        } else {
            Mode::Init
        };
        if explicit {
            warnings.push(format!(
                "annotation {}: a {} agent would keep this run-to-completion pod (Job, or restartPolicy \
                 Never/OnFailure) running; using {} instead",
                ann::MODE,
                mode,
                adapted
            ));
        }
        mode = adapted;
    }
    if spec.exec() && !mode.prepopulates() {
        return Err(Deny::annotation(
            ann::MODE,
            "env-* annotations need the values before the app starts, which mode sidecar does not guarantee; \
             use init, init+sidecar or native-sidecar",
        ));
    }
    if mode == Mode::Init {
        if spec.agent.signal.is_some() {
            warnings.push(format!(
                "annotation {}: mode init fetches once and never refreshes, so no change is ever signalled",
                ann::SIGNAL
            ));
        }
        if spec.refresh_explicit {
            warnings.push(format!(
                "annotation {}: mode init fetches once and never refreshes; the interval is unused",
                ann::REFRESH_INTERVAL
            ));
        }
    }
    if let Some(ChangeSignal::Process { process, .. }) = &spec.agent.signal
        && pod.spec.share_process_namespace != Some(true)
    {
        return Err(Deny::annotation(
            ann::SIGNAL,
            format!(
                "the agent can signal {process:?} only when the pod shares one process namespace; set \
                 spec.shareProcessNamespace: true, or use a file: or http: signal"
            ),
        ));
    }
    Ok(mode)
}

/// The containers that get the mount (`containers`, else every app container) and the ones
/// exec mode wraps (`exec-containers`, else the mounted app containers), which get the mount too.
fn choose_targets(
    containers: &Containers<'_, '_>,
    spec: &InjectionSpec,
    warnings: &mut Vec<String>,
) -> Result<Targets, Deny> {
    let named = |key: &str, names: &[String]| -> Result<Vec<Place>, Deny> {
        let mut places = Vec::with_capacity(names.len());
        for name in names {
            let place = containers.named(key, name)?;
            if !places.contains(&place) {
                places.push(place);
            }
        }
        Ok(places)
    };
    let mut mounted = match &spec.containers {
        None => (0..containers.apps.len()).map(Place::App).collect(),
        Some(names) => named(ann::CONTAINERS, names)?,
    };
    let mut exec = Vec::new();
    if spec.exec() {
        exec = match &spec.exec_containers {
            None => mounted
                .iter()
                .copied()
                .filter(|p| matches!(p, Place::App(_)))
                .collect(),
            Some(names) => named(ann::EXEC_CONTAINERS, names)?,
        };
        if exec.is_empty() {
            return Err(Deny::annotation(
                ann::EXEC_CONTAINERS,
                "env-* annotations need at least one app container to wrap; name it in ps-injector.io/exec-containers",
            ));
        }
        for place in &exec {
            let c = containers.get(*place);
            if c.command.as_ref().is_none_or(|cmd| cmd.is_empty()) {
                return Err(Deny(format!(
                    "container {:?} has no command in the pod spec, and env-* annotations wrap it as `ps-agent \
                     exec -- <command>`; set the container's command (the image's entrypoint, e.g. \
                     [\"/app/server\"]) in the pod spec — the webhook never looks it up in a registry",
                    c.name.as_str()
                )));
            }
            if !mounted.contains(place) {
                mounted.push(*place);
            }
        }
    } else if spec.exec_containers.is_some() {
        warnings.push(format!(
            "annotation {}: there are no env-* annotations, so no command is wrapped",
            ann::EXEC_CONTAINERS
        ));
    }
    for place in &mounted {
        let c = containers.get(*place);
        if c.volume_mounts.iter().flatten().any(|m| {
            m.mount_path
                .as_ref()
                .is_some_and(|p| p.as_str().trim_end_matches('/') == spec.mount_path)
        }) {
            return Err(Deny::annotation(
                ann::MOUNT_PATH,
                format!(
                    "container {:?} already mounts something at {}; choose another path with {}",
                    c.name.as_str(),
                    spec.mount_path,
                    ann::MOUNT_PATH
                ),
            ));
        }
    }
    Ok(Targets { mounted, exec })
}

/// Denies a pod whose own containers or volumes already use a name the patch adds.
fn check_names(
    pod: &PodView<'_>,
    containers: &Containers<'_, '_>,
    spec: &InjectionSpec,
    mode: Mode,
    config: &Config,
) -> Result<(), Deny> {
    let agent_names = [
        (spec.exec(), COPY_CONTAINER),
        (matches!(mode, Mode::Init | Mode::InitSidecar), INIT_CONTAINER),
        (mode.refreshes(), SIDECAR_CONTAINER),
    ];
    for (_, name) in agent_names.iter().filter(|(added, _)| *added) {
        if containers.find(name).is_some() {
            return Err(Deny(format!(
                "the pod already has a container named {name:?}, the name of the injected agent; rename that \
                 container (the webhook never renames it), or remove {} if the pod is already set up by hand",
                ann::INJECT
            )));
        }
    }
    let volume_names = [
        (true, layout::VOLUME_NAME),
        (true, layout::NO_TOKEN_VOLUME_NAME),
        (config.password_safe.ca_bundle.is_some(), CA_VOLUME_NAME),
    ];
    for (_, name) in volume_names.iter().filter(|(added, _)| *added) {
        if pod
            .spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name.as_str() == *name)
        {
            return Err(Deny(format!(
                "the pod already has a volume named {name:?}, the name of the injected volume; rename that volume \
                 (the webhook never renames it)"
            )));
        }
    }
    Ok(())
}

/// Who must be able to read the files: one known user, a group, or only root.
fn choose_readers(
    pod: &PodView<'_>,
    containers: &Containers<'_, '_>,
    mounted: &[Place],
    config: &Config,
) -> Result<Readers, Deny> {
    let pod_security = pod.spec.security_context.as_ref();
    let pod_uid = pod_security.and_then(|s| s.run_as_user);
    let mut known: Vec<(i64, &str)> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for place in mounted {
        let c = containers.get(*place);
        match c.security_context.and_then(|s| s.run_as_user).or(pod_uid) {
            // The agent would run as it: refused here, with the field, rather than by the
            // apiserver's validation of the injected container (found by the property tests).
            Some(uid) if !(0..=i64::from(i32::MAX)).contains(&uid) => {
                return Err(Deny(format!(
                    "container {:?} runs as user {uid} (its or the pod's securityContext.runAsUser), which is \
                     not a user ID (0 to 2147483647); fix runAsUser",
                    c.name.as_str()
                )));
            }
            Some(0) => {} // root reads any file
            Some(uid) => known.push((uid, c.name.as_str())),
            None => unknown.push(c.name.as_str()),
        }
    }
    let mut distinct: Vec<i64> = known.iter().map(|(u, _)| *u).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if unknown.is_empty() && distinct.len() == 1 {
        return Ok(Readers::User(distinct[0]));
    }
    if unknown.is_empty() && distinct.is_empty() {
        return Ok(Readers::AgentDefault);
    }
    match pod_security.and_then(|s| s.fs_group) {
        // The agent writes the env file for `exec` group-readable (0440) as well.
        Some(gid) => Ok(Readers::Group { gid, added: false }),
        None if config.injection.require_known_user => Err(Deny(format!(
            "{}; set spec.securityContext.runAsUser to the app's user, or spec.securityContext.\
             fsGroup so the files are group-readable (0440), or limit the mount with {} (this cluster \
             sets injection.requireKnownUser)",
            readers_problem(&known, &unknown),
            ann::CONTAINERS
        ))),
        None => Ok(match config.agent.run_as_user {
            AgentUser::Id(uid) => Readers::Group {
                gid: config.agent.run_as_group.unwrap_or(uid),
                added: true,
            },
            AgentUser::Platform => Readers::Platform,
        }),
    }
}

/// Why no single user can own the files: the readers' users differ or are unknown.
fn readers_problem(known: &[(i64, &str)], unknown: &[&str]) -> String {
    if unknown.is_empty() {
        format!(
            "the containers that read the secrets run as different users ({}), so no single owner can make \
             the files readable to all",
            known
                .iter()
                .map(|(u, n)| format!("{n}: {u}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "the webhook cannot tell which user {} (no runAsUser in the pod's or the container's \
             securityContext), so it cannot make the secret files readable to {}",
            match unknown {
                [one] => format!("container {one:?} runs as"),
                many => format!("containers {} run as", many.join(", ")),
            },
            if unknown.len() == 1 { "it" } else { "them" }
        )
    }
}

/// The one place file modes are decided: an output's `file-mode-<name>` when given, else 0400
/// for one known reader and 0440 for readers sharing a group. The spec's agent configuration is
/// copied only when a mode differs from the default.
fn with_file_modes<'s>(
    spec: &'s InjectionSpec,
    readers: Readers,
    warnings: &mut Vec<String>,
) -> Cow<'s, AgentConfig> {
    let group_readable = FileMode::new(0o440).unwrap_or_default();
    // `group`: the readers' group, named in the warning about an explicit mode it cannot read.
    let (default_mode, group) = match readers {
        Readers::Group { gid, .. } => (group_readable, Some(gid)),
        Readers::Platform => (group_readable, None),
        Readers::User(_) | Readers::AgentDefault => (FileMode::DEFAULT, None),
    };
    if default_mode == FileMode::DEFAULT && spec.file_modes.is_empty() {
        return Cow::Borrowed(&spec.agent);
    }
    let mut agent = spec.agent.clone();
    let renders = (agent.secrets.iter_mut().map(|s| (s.name.as_str(), &mut s.render)))
        .chain(agent.folders.iter_mut().map(|s| (s.name.as_str(), &mut s.render)))
        .chain(
            agent
                .accounts
                .iter_mut()
                .map(|s| (s.name.as_str(), &mut s.render)),
        );
    for (name, render) in renders {
        render.file_mode = match spec.file_modes.get(name) {
            Some(&explicit) => {
                if let Some(gid) = group
                    && explicit.bits() & 0o040 == 0
                {
                    warnings.push(format!(
                        "annotation {}{name}: {explicit} lets only the agent's user read the file, but the app \
                         reads it through group {gid}; use \"0440\"",
                        ann::FILE_MODE_PREFIX,
                    ));
                }
                explicit
            }
            None => default_mode,
        };
    }
    if let Some(bt) = &mut agent.beyondtrust {
        bt.file_mode = default_mode;
    }
    Cow::Owned(agent)
}

/// Whether the agent's init step goes before the pod's own init containers: asked for, needed by
/// an init container that reads the secrets, or by a service mesh's network setup.
fn init_step_first(
    pod: &PodView<'_>,
    containers: &Containers<'_, '_>,
    mounted: &[Place],
    spec: &InjectionSpec,
    mode: Mode,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<bool, Deny> {
    let reading_init = mounted.iter().find_map(|p| match p {
        Place::Init(i) => Some(containers.inits[*i].name.as_str()),
        Place::App(_) => None,
    });
    let mesh: Option<String> = containers
        .inits
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| config.injection.mesh_init_containers.iter().any(|m| m == n))
        .map(|n| format!("init container {n}"))
        .or_else(|| {
            config
                .injection
                .mesh_annotations
                .iter()
                .find(|a| pod.meta.annotations.get(a).is_some())
                .map(|a| format!("annotation {a}"))
        });
    match spec.init_first {
        Some(true) => Ok(true),
        Some(false) => {
            if let Some(name) = reading_init {
                return Err(Deny::annotation(
                    ann::INIT_FIRST,
                    format!(
                        "init container {name:?} reads the secrets, so the agent must run before it; remove \
                         {} or take {name:?} out of {}",
                        ann::INIT_FIRST,
                        ann::CONTAINERS
                    ),
                ));
            }
            let has_init_step = spec.exec() || mode.prepopulates();
            if let Some(what) = &mesh
                && has_init_step
                && !containers.inits.is_empty()
            {
                warnings.push(format!(
                    "annotation {}: \"false\" puts the agent after the mesh's network setup ({what}), where its \
                     traffic is intercepted before the mesh proxy runs: fetching secrets will likely fail",
                    ann::INIT_FIRST
                ));
            }
            Ok(false)
        }
        None => Ok(config.injection.init_first || mesh.is_some() || reading_init.is_some()),
    }
}

/// The agent's security context: restricted, running as the readers' user or the configured
/// one, in the group the readers were given.
fn agent_security(readers: Readers, config: &Config) -> SecurityContext {
    SecurityContext {
        run_as_user: match readers {
            Readers::User(uid) => Some(uid),
            Readers::Group { .. } | Readers::AgentDefault => config.agent.run_as_user.id(),
            Readers::Platform => None,
        },
        // Files must be owned by the group the readers were given.
        run_as_group: match readers {
            Readers::Group { gid, added: true } => Some(gid),
            _ => config.agent.run_as_group,
        },
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The containers the patch adds: init containers (the exec copy step, then the init agent or
/// the native sidecar) and the classic sidecar.
struct Agents {
    inits: Vec<Container>,
    sidecar: Option<Container>,
}

fn agent_containers(
    spec: &InjectionSpec,
    mode: Mode,
    config: &Config,
    mut security: SecurityContext,
    agent_json: &str,
    ca_file: Option<&str>,
) -> Agents {
    let ca = config.password_safe.ca_bundle.as_ref();
    let env = || agent_env_vars(agent_json, &spec.credentials_secret, config, ca_file);
    // A native sidecar is an init container with `restartPolicy: Always` (Kubernetes ≥ 1.28)
    // and a startup probe that holds the app back until the first complete write.
    let container =
        |name: &str, args: Vec<String>, env: Option<Vec<EnvVar>>, native: bool, security| Container {
            name: name.to_owned(),
            image: Some(config.agent.image.clone()),
            image_pull_policy: Some(config.agent.image_pull_policy.as_str().to_owned()),
            command: Some(config.agent.command.clone()),
            args: Some(args),
            env,
            resources: Some(agent_resources(spec)),
            volume_mounts: Some(agent_mounts(spec, ca.is_some() && name != COPY_CONTAINER)),
            security_context: Some(security),
            termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
            restart_policy: native.then(|| "Always".to_owned()),
            startup_probe: native.then(|| ready_probe(spec, config)),
            ..Container::default()
        };
    // Each container owns a copy of the security context; the last one built takes it.
    let mut inits = Vec::new();
    if spec.exec() {
        inits.push(container(
            COPY_CONTAINER,
            vec![command::COPY_SELF.to_owned(), bin_dir(spec)],
            None,
            false,
            security.clone(),
        ));
    }
    let watch = || vec![command::WATCH.to_owned()];
    let sidecar = matches!(mode, Mode::Sidecar | Mode::InitSidecar);
    match mode {
        Mode::Init | Mode::InitSidecar => inits.push(container(
            INIT_CONTAINER,
            vec![command::FETCH.to_owned()],
            Some(env()),
            false,
            if sidecar {
                security.clone()
            } else {
                std::mem::take(&mut security)
            },
        )),
        Mode::NativeSidecar => inits.push(container(
            SIDECAR_CONTAINER,
            watch(),
            Some(env()),
            true,
            std::mem::take(&mut security),
        )),
        Mode::Sidecar => {}
    }
    let sidecar = sidecar.then(|| {
        container(
            SIDECAR_CONTAINER,
            watch(),
            Some(env()),
            false,
            std::mem::take(&mut security),
        )
    });
    Agents { inits, sidecar }
}

/// The agent's requests and limits; a list with neither quantity is left out (an absent one
/// means "none", like the hand-written objects before).
fn agent_resources(spec: &InjectionSpec) -> ResourceRequirements {
    let list = |cpu: &Option<String>, memory: &Option<String>| {
        // Inserted one by one: collecting into a BTreeMap sorts a temporary vector first.
        let mut quantities = std::collections::BTreeMap::new();
        for (name, q) in [("cpu", cpu), ("memory", memory)] {
            if let Some(q) = q {
                quantities.insert(name.to_owned(), Quantity(q.clone()));
            }
        }
        (!quantities.is_empty()).then_some(quantities)
    };
    let r = &spec.resources;
    ResourceRequirements {
        requests: list(&r.requests.cpu, &r.requests.memory),
        limits: list(&r.limits.cpu, &r.limits.memory),
        claims: None,
    }
}

/// A volume mount; `readOnly` is written only when true, as Kubernetes defaults it to false.
fn mount(name: &str, mount_path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: mount_path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// An agent container's mounts. Every injected container mounts the empty no-token volume where
/// the ServiceAccount admission plugin would put the API token: the plugin skips a container with
/// a mount at that path, also when it is re-run after this mutation.
fn agent_mounts(spec: &InjectionSpec, with_ca: bool) -> Vec<VolumeMount> {
    let mut m = Vec::with_capacity(3);
    m.push(mount(layout::VOLUME_NAME, &spec.mount_path, false));
    if with_ca {
        m.push(mount(CA_VOLUME_NAME, CA_MOUNT_DIR, true));
    }
    m.push(mount(
        layout::NO_TOKEN_VOLUME_NAME,
        layout::SERVICE_ACCOUNT_DIR,
        true,
    ));
    m
}

/// The native sidecar's startup probe: `ps-agent ready`, which passes after the first complete
/// write, so the app never starts before its files.
fn ready_probe(spec: &InjectionSpec, config: &Config) -> Probe {
    let command = (config.agent.command.iter().cloned())
        .chain([
            command::READY.to_owned(),
            "--root".to_owned(),
            spec.mount_path.clone(),
        ])
        .collect();
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(1),
        timeout_seconds: Some(1),
        failure_threshold: Some(config.injection.startup_failure_threshold),
        ..Probe::default()
    }
}

/// Where the exec copy step puts the agent binary.
fn bin_dir(spec: &InjectionSpec) -> String {
    format!("{}/{}", spec.mount_path, layout::BIN_DIR)
}

/// The in-memory secrets volume, the CA bundle's ConfigMap volume, the empty no-token volume.
fn add_volumes(patch: &mut Vec<PatchOp>, pod: &PodView<'_>, config: &Config) {
    let memory = |name: &str, size_limit: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity(size_limit.to_owned())),
        }),
        ..Volume::default()
    };
    let mut volumes = Vec::with_capacity(3);
    volumes.push(memory(layout::VOLUME_NAME, &config.injection.volume_size_limit));
    volumes.extend(config.password_safe.ca_bundle.as_ref().map(|ca| Volume {
        name: CA_VOLUME_NAME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: ca.config_map.clone(),
            items: Some(vec![KeyToPath {
                key: ca.key.clone(),
                path: CA_FILE_NAME.to_owned(),
                mode: None,
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }));
    volumes.push(memory(layout::NO_TOKEN_VOLUME_NAME, layout::NO_TOKEN_SIZE_LIMIT));
    if pod.spec.volumes.is_some() {
        for v in &volumes {
            patch.push(PatchOp::add("/spec/volumes/-", v));
        }
    } else {
        patch.push(PatchOp::add("/spec/volumes", &volumes));
    }
}

/// Readers of unknown or different users get the agent's group, so 0440 files reach them.
fn add_supplemental_group(patch: &mut Vec<PatchOp>, pod: &PodView<'_>, readers: Readers) {
    let Readers::Group { gid, added: true } = readers else {
        return;
    };
    match &pod.spec.security_context {
        None => patch.push(PatchOp::add(
            "/spec/securityContext",
            &PodSecurityContext {
                supplemental_groups: Some(vec![gid]),
                ..PodSecurityContext::default()
            },
        )),
        Some(sc) => match &sc.supplemental_groups {
            Some(groups) if groups.contains(&gid) => {}
            Some(_) => patch.push(PatchOp::add("/spec/securityContext/supplementalGroups/-", &gid)),
            None => patch.push(PatchOp::add("/spec/securityContext/supplementalGroups", &[gid])),
        },
    }
}

/// The read-only mount in every target container, and `ps-agent exec -- <command>` in the ones
/// exec mode wraps (the patch's one `replace`).
fn add_mounts_and_exec(
    patch: &mut Vec<PatchOp>,
    containers: &Containers<'_, '_>,
    targets: &Targets,
    spec: &InjectionSpec,
) {
    let app_mount = mount(layout::VOLUME_NAME, &spec.mount_path, true);
    let exec_bin = format!("{}/{}", bin_dir(spec), layout::BIN_NAME);
    for place in &targets.mounted {
        let (array, index) = match place {
            Place::App(i) => ("containers", *i),
            Place::Init(i) => ("initContainers", *i),
        };
        let idx = index.to_string();
        let c = containers.get(*place);
        if c.volume_mounts.is_some() {
            patch.push(PatchOp::add(
                pointer(["spec", array, &idx, "volumeMounts", "-"]),
                &app_mount,
            ));
        } else {
            patch.push(PatchOp::add(
                pointer(["spec", array, &idx, "volumeMounts"]),
                &[&app_mount],
            ));
        }
        if targets.exec.contains(place) {
            let original = c.command.as_deref().unwrap_or_default();
            let mut wrapped: Vec<&str> = Vec::with_capacity(original.len() + 3);
            wrapped.extend([exec_bin.as_str(), command::EXEC, "--"]);
            wrapped.extend(original.iter().map(Text::as_str));
            patch.push(PatchOp::replace(
                pointer(["spec", array, &idx, "command"]),
                &wrapped,
            ));
        }
    }
}

/// The agent containers: the init step first (inserted at 0, 1, ...) or last, the sidecar last.
fn add_agents(patch: &mut Vec<PatchOp>, pod: &PodView<'_>, agents: &Agents, first: bool) {
    if !agents.inits.is_empty() {
        if pod.spec.init_containers.is_none() {
            patch.push(PatchOp::add("/spec/initContainers", &agents.inits));
        } else if first {
            for (i, c) in agents.inits.iter().enumerate() {
                patch.push(PatchOp::add(
                    pointer(["spec", "initContainers", &i.to_string()]),
                    c,
                ));
            }
        } else {
            for c in &agents.inits {
                patch.push(PatchOp::add("/spec/initContainers/-", c));
            }
        }
    }
    if let Some(c) = &agents.sidecar {
        patch.push(PatchOp::add("/spec/containers/-", c));
    }
}

/// [`ann::STATUS`] in the pod's annotations (`/` escaped as `~1`).
const STATUS_PATH: &str = "/metadata/annotations/ps-injector.io~1status";

/// The idempotence marker, the patch's last operation.
fn add_status(patch: &mut Vec<PatchOp>, pod: &PodView<'_>) {
    if pod.meta.annotations.present {
        patch.push(PatchOp::add(STATUS_PATH, &ann::STATUS_INJECTED));
    } else {
        patch.push(PatchOp::add(
            "/metadata/annotations",
            &[(ann::STATUS, ann::STATUS_INJECTED)]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        ));
    }
}

/// The agent's environment: its configuration, the credentials from the pod's Secret (none of
/// them in the patch itself), and the CA bundle's path.
fn agent_env_vars(agent_json: &str, secret: &str, config: &Config, ca_file: Option<&str>) -> Vec<EnvVar> {
    let keys = &config.credentials.keys;
    let auth = config.credentials.auth;
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let from = |name: &str, key: &str, optional: bool| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(optional),
            }),
            ..EnvVarSource::default()
        }),
    };
    let mut env = vec![value(agent_env::AGENT_CONFIG, agent_json)];
    if auth != Auth::OAuth {
        env.push(from(agent_env::API_KEY, &keys.api_key, auth == Auth::Auto));
        env.push(from(agent_env::RUNAS, &keys.run_as, true));
        env.push(from(agent_env::RUNAS_PASSWORD, &keys.run_as_password, true));
    }
    if auth != Auth::ApiKey {
        env.push(from(agent_env::CLIENT_ID, &keys.client_id, auth == Auth::Auto));
        env.push(from(
            agent_env::CLIENT_SECRET,
            &keys.client_secret,
            auth == Auth::Auto,
        ));
    }
    // The CA bundle's one place (not also `passwordSafe.caFile`): running the agent outside its
    // pod (the demo, the end-to-end suite) points this variable at another bundle.
    if let Some(path) = ca_file {
        env.push(value(agent_env::CA_FILE, path));
    }
    env
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        pod::{PodMeta, PodSpecView},
        spec,
    };

    struct Case {
        name: &'static str,
        annotations: &'static [(&'static str, &'static str)],
        spec: Value,
        config: &'static str,
        job: bool,
        expect: Result<&'static [&'static str], &'static str>,
    }

    fn app(uid: Option<i64>) -> Value {
        let mut c = json!({"name": "app", "image": "x", "command": ["/app"]});
        if let Some(u) = uid {
            c["securityContext"] = json!({"runAsUser": u});
        }
        c
    }

    /// Runs the mutation and returns "op path" lines, plus the mutation itself.
    fn run(case: &Case) -> Result<(Vec<String>, Mutation), String> {
        let config = Config::from_yaml(case.config).unwrap();
        let mut annotations = serde_json::Map::new();
        annotations.insert("ps-injector.io/inject".into(), "true".into());
        for (k, v) in case.annotations {
            let key = if k.contains('/') {
                (*k).to_owned()
            } else {
                format!("ps-injector.io/{k}")
            };
            annotations.insert(key, (*v).into());
        }
        let meta_json = json!({"name": "p", "annotations": annotations}).to_string();
        let spec_json = case.spec.to_string();
        let meta: PodMeta<'_> = serde_json::from_str(&meta_json).unwrap();
        let pod = PodView {
            spec: serde_json::from_str(&spec_json).unwrap(),
            runs_to_completion: case.job,
            meta,
        };
        let injection = spec::build(pod.meta.annotations.iter(), "ns", &config).map_err(|d| d.0)?;
        let m = mutate(&pod, &injection, &config).map_err(|d| d.0)?;
        let lines = m
            .patch
            .iter()
            .map(|op| {
                format!(
                    "{} {}",
                    if op.op == OpKind::Add { "add" } else { "replace" },
                    op.path
                )
            })
            .collect();
        Ok((lines, m))
    }

    use crate::patch::OpKind;

    const URL: &str = "passwordSafe: {url: \"https://ps.example.com/x\"}\n";

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "native sidecar by default, arrays created",
                annotations: &[("secret-db", "a/b")],
                spec: json!({"securityContext": {"runAsUser": 1000}, "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "add /spec/initContainers",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "classic sidecar appends",
                annotations: &[("secret-db", "a/b"), ("mode", "sidecar")],
                spec: json!({"volumes": [{"name": "v"}], "containers": [app(Some(7))]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes/-",
                    "add /spec/volumes/-",
                    "add /spec/containers/0/volumeMounts",
                    "add /spec/containers/-",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "init+sidecar after existing init containers",
                annotations: &[("secret-db", "a/b"), ("mode", "init+sidecar")],
                spec: json!({"initContainers": [{"name": "setup", "image": "y"}], "containers": [app(Some(7))]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "add /spec/initContainers/-",
                    "add /spec/containers/-",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "init-first inserts at 0; copy then fetch",
                annotations: &[("env-X", "a/b"), ("mode", "init"), ("init-first", "true")],
                spec: json!({"initContainers": [{"name": "setup", "image": "y"}], "containers": [app(Some(7))]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "replace /spec/containers/0/command",
                    "add /spec/initContainers/0",
                    "add /spec/initContainers/1",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "mesh annotation puts the agent first",
                annotations: &[
                    ("secret-db", "a/b"),
                    ("mode", "init"),
                    ("linkerd.io/proxy-version", "stable"),
                ],
                spec: json!({"initContainers": [{"name": "setup", "image": "y"}], "containers": [app(Some(7))]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "add /spec/initContainers/0",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "selected init container: mounted, agent first",
                annotations: &[("secret-db", "a/b"), ("mode", "init"), ("containers", "setup")],
                spec: json!({"securityContext": {"runAsUser": 5}, "initContainers": [{"name": "setup", "image": "y", "volumeMounts": []}], "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/initContainers/0/volumeMounts/-",
                    "add /spec/initContainers/0",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "job pod without native sidecars: init only",
                annotations: &[("secret-db", "a/b"), ("mode", "init+sidecar")],
                spec: json!({"securityContext": {"runAsUser": 1}, "containers": [app(None)]}),
                config: "passwordSafe: {url: \"https://ps.example.com/x\"}\ninjection: {nativeSidecars: false}\n",
                job: true,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "add /spec/initContainers",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "init-first false with a selected init container",
                annotations: &[
                    ("secret-db", "a/b"),
                    ("containers", "setup,app"),
                    ("init-first", "false"),
                ],
                spec: json!({"securityContext": {"runAsUser": 1}, "initContainers": [{"name": "setup", "image": "y"}], "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err("init container \"setup\" reads the secrets"),
            },
            Case {
                name: "exec with sidecar mode",
                annotations: &[("env-X", "a/b"), ("mode", "sidecar")],
                spec: json!({"securityContext": {"runAsUser": 1}, "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err("which mode sidecar does not guarantee"),
            },
            Case {
                name: "exec without command",
                annotations: &[("env-X", "a/b")],
                spec: json!({"securityContext": {"runAsUser": 1}, "containers": [{"name": "app", "image": "x"}]}),
                config: URL,
                job: false,
                expect: Err("container \"app\" has no command in the pod spec"),
            },
            Case {
                name: "exec with fsGroup only",
                annotations: &[("env-X", "a/b"), ("mode", "init")],
                spec: json!({"securityContext": {"fsGroup": 3}, "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Ok(&[
                    "add /spec/volumes",
                    "add /spec/containers/0/volumeMounts",
                    "replace /spec/containers/0/command",
                    "add /spec/initContainers",
                    "add /metadata/annotations/ps-injector.io~1status",
                ]),
            },
            Case {
                name: "unknown exec container",
                annotations: &[("env-X", "a/b"), ("exec-containers", "nope")],
                spec: json!({"securityContext": {"runAsUser": 1}, "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err(
                    "annotation ps-injector.io/exec-containers: the pod has no container named \"nope\" (it has app)",
                ),
            },
            Case {
                name: "no containers",
                annotations: &[("secret-db", "a/b")],
                spec: json!({}),
                config: URL,
                job: false,
                expect: Err("no containers"),
            },
            Case {
                name: "init container clash",
                annotations: &[("secret-db", "a/b"), ("mode", "init")],
                spec: json!({"securityContext": {"runAsUser": 1}, "initContainers": [{"name": "ps-agent-init", "image": "y"}], "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err("already has a container named \"ps-agent-init\""),
            },
            Case {
                name: "negative user",
                annotations: &[("secret-db", "a/b")],
                spec: json!({"securityContext": {"runAsUser": -1}, "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err(
                    "runs as user -1 (its or the pod's securityContext.runAsUser), which is not a user ID",
                ),
            },
            Case {
                name: "no-token volume clash",
                annotations: &[("secret-db", "a/b")],
                spec: json!({"securityContext": {"runAsUser": 1}, "volumes": [{"name": "ps-injector-no-token", "emptyDir": {}}], "containers": [app(None)]}),
                config: URL,
                job: false,
                expect: Err("already has a volume named \"ps-injector-no-token\""),
            },
            Case {
                name: "native sidecar disabled but named",
                annotations: &[("secret-db", "a/b"), ("mode", "native-sidecar")],
                spec: json!({"securityContext": {"runAsUser": 1}, "containers": [app(None)]}),
                config: "passwordSafe: {url: \"https://ps.example.com/x\"}\ninjection: {nativeSidecars: false}\n",
                job: false,
                expect: Err("native sidecars are disabled in this cluster"),
            },
        ]
    }

    #[test]
    fn mutation_table() {
        for case in cases() {
            match (run(&case), case.expect) {
                (Ok((lines, _)), Ok(expected)) => assert_eq!(lines, expected, "{}", case.name),
                (Err(message), Err(fragment)) => {
                    assert!(message.contains(fragment), "{}: {message}", case.name)
                }
                (Ok((lines, _)), Err(fragment)) => {
                    panic!("{}: allowed {lines:?}, wanted {fragment}", case.name)
                }
                (Err(message), Ok(_)) => panic!("{}: denied: {message}", case.name),
            }
        }
    }

    fn case(annotations: &'static [(&'static str, &'static str)], spec: Value, config: &'static str) -> Case {
        Case {
            name: "single",
            annotations,
            spec,
            config,
            job: false,
            expect: Ok(&[]),
        }
    }

    fn patched(c: &Case) -> (Value, Mutation) {
        let (_, m) = run(c).unwrap();
        let mut pod = json!({"metadata": {"annotations": {}}, "spec": c.spec.clone()});
        let patch: json_patch::Patch = serde_json::from_slice(&crate::patch::to_json(&m.patch)).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
        (pod, m)
    }

    /// The file mode the agent configuration gives secret output `name`.
    fn secret_mode(config: &inject_api::AgentConfig, name: &str) -> u32 {
        let secret = config.secrets.iter().find(|s| s.name == name);
        secret.expect("no such secret output").render.file_mode.bits()
    }

    fn agent_config(pod: &Value, name: &str) -> inject_api::AgentConfig {
        let containers = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["spec"]["containers"].as_array().into_iter().flatten());
        let c = containers.into_iter().find(|c| c["name"] == name).unwrap();
        let env = c["env"].as_array().unwrap();
        let json = env.iter().find(|e| e["name"] == "PS_AGENT_CONFIG").unwrap()["value"]
            .as_str()
            .unwrap();
        inject_api::AgentConfig::from_json(json).unwrap()
    }

    #[test]
    fn readers_decide_the_agent_user_and_file_modes() {
        // One known user: the agent runs as it, files 0400.
        let c = case(
            &[("secret-db", "a/b"), ("mode", "init")],
            json!({"containers": [app(Some(1000))]}),
            URL,
        );
        let (pod, _) = patched(&c);
        let agent = &pod["spec"]["initContainers"][0];
        assert_eq!(agent["securityContext"]["runAsUser"], 1000);
        assert_eq!(
            agent_config(&pod, "ps-agent-init").secrets[0]
                .render
                .file_mode
                .bits(),
            0o400
        );

        // Different users with fsGroup: the configured agent user, files 0440, explicit modes kept
        // (with a warning when the group cannot read).
        let c = case(
            &[
                ("secret-db", "a/b"),
                ("secret-key", "a/c"),
                ("file-mode-key", "0400"),
                ("folders", "a"),
                ("mode", "init"),
            ],
            json!({"securityContext": {"fsGroup": 3000}, "containers": [app(Some(1000)), {"name": "w", "image": "x", "securityContext": {"runAsUser": 1001}}]}),
            URL,
        );
        let (pod, m) = patched(&c);
        assert_eq!(
            pod["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
            65532
        );
        let config = agent_config(&pod, "ps-agent-init");
        assert_eq!(
            (secret_mode(&config, "db"), secret_mode(&config, "key")),
            (0o440, 0o400)
        );
        assert_eq!(config.beyondtrust.unwrap().file_mode.bits(), 0o440);
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("file-mode-key: 0400 lets only the agent's user")),
            "{:?}",
            m.warnings
        );

        // Only root readers: the configured agent user.
        let c = case(
            &[("secret-db", "a/b")],
            json!({"containers": [app(Some(0))]}),
            URL,
        );
        let (pod, _) = patched(&c);
        assert_eq!(
            pod["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
            65532
        );

        // Unknown users, no fsGroup (the default): the agent's group is added to the pod's
        // supplementalGroups, the agent runs with it as its primary group, files 0440; an
        // explicit mode the group cannot read is kept and named in a warning.
        let c = case(
            &[
                ("secret-db", "a/b"),
                ("secret-key", "a/c"),
                ("file-mode-key", "0400"),
                ("mode", "init"),
            ],
            json!({"containers": [app(None)]}),
            URL,
        );
        let (pod, m) = patched(&c);
        assert_eq!(
            pod["spec"]["securityContext"],
            json!({"supplementalGroups": [65532]})
        );
        let agent = &pod["spec"]["initContainers"][0]["securityContext"];
        assert_eq!(
            (agent["runAsUser"].as_i64(), agent["runAsGroup"].as_i64()),
            (Some(65532), Some(65532))
        );
        let config = agent_config(&pod, "ps-agent-init");
        assert_eq!(
            (secret_mode(&config, "db"), secret_mode(&config, "key")),
            (0o440, 0o400)
        );
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("file-mode-key: 0400"), "{:?}", m.warnings);

        // Different users, an existing securityContext and list: the group is appended once;
        // a configured runAsGroup is the group used.
        let c = case(
            &[("secret-db", "a/b")],
            json!({"securityContext": {"supplementalGroups": [5]}, "containers": [app(Some(1000)), {"name": "w", "image": "x", "securityContext": {"runAsUser": 1001}}]}),
            "passwordSafe: {url: \"https://ps.example.com/x\"}\nagent: {runAsGroup: 7000}\n",
        );
        let (pod, m) = patched(&c);
        assert_eq!(
            pod["spec"]["securityContext"]["supplementalGroups"],
            json!([5, 7000])
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["securityContext"]["runAsGroup"],
            7000
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let c = case(
            &[("secret-db", "a/b")],
            json!({"securityContext": {"runAsNonRoot": true, "supplementalGroups": [65532]}, "containers": [app(None)]}),
            URL,
        );
        let (lines, _) = run(&c).unwrap();
        assert!(!lines.iter().any(|l| l.contains("securityContext")), "{lines:?}");
        let c = case(
            &[("secret-db", "a/b")],
            json!({"securityContext": {"runAsNonRoot": true}, "containers": [app(None)]}),
            URL,
        );
        let (pod, _) = patched(&c);
        assert_eq!(
            pod["spec"]["securityContext"],
            json!({"runAsNonRoot": true, "supplementalGroups": [65532]})
        );

        // Exec mode works the same way: the wrapped command reads the 0440 env file through
        // the group.
        let c = case(&[("env-DB", "a/b")], json!({"containers": [app(None)]}), URL);
        let (pod, _) = patched(&c);
        assert_eq!(
            pod["spec"]["securityContext"]["supplementalGroups"],
            json!([65532])
        );

        // injection.requireKnownUser: true denies instead, naming the fix.
        let c = case(
            &[("secret-db", "a/b")],
            json!({"containers": [app(None)]}),
            "passwordSafe: {url: \"https://ps.example.com/x\"}\ninjection: {requireKnownUser: true}\n",
        );
        let deny = run(&c).unwrap_err();
        assert!(
            deny.contains("cannot tell which user container \"app\" runs as")
                && deny.contains("set spec.securityContext.runAsUser"),
            "{deny}"
        );
    }

    #[test]
    fn credentials_ca_and_resources() {
        let config = "passwordSafe:\n  url: https://ps.example.com/x\n  caBundle: {configMap: corp-ca}\ncredentials: {secretName: creds, auth: apiKey}\nagent: {runAsGroup: 10}\n";
        let c = case(
            &[("secret-db", "a/b"), ("mode", "init"), ("agent-cpu-limit", "50m")],
            json!({"containers": [app(Some(7))]}),
            config,
        );
        let (pod, _) = patched(&c);
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            volumes[1]["configMap"],
            json!({"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]})
        );
        let agent = &pod["spec"]["initContainers"][0];
        let env = agent["env"].as_array().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "PS_AGENT_CONFIG",
                "PS_API_KEY",
                "PS_RUNAS",
                "PS_RUNAS_PASSWORD",
                "PS_CA_FILE"
            ]
        );
        assert_eq!(
            env[1]["valueFrom"]["secretKeyRef"],
            json!({"name": "creds", "key": "api-key", "optional": false})
        );
        assert_eq!(env[4]["value"], "/etc/ps-injector/ca/ca.crt");
        assert_eq!(
            agent["volumeMounts"][1],
            json!({"name": "ps-injector-ca", "mountPath": "/etc/ps-injector/ca", "readOnly": true})
        );
        assert_eq!(agent["securityContext"]["runAsGroup"], 10);
        assert_eq!(
            agent["resources"]["limits"],
            json!({"cpu": "50m", "memory": "32Mi"})
        );
        // The path is in PS_CA_FILE only (the override point outside a pod); caOnly stays.
        let rendered = agent_config(&pod, "ps-agent-init");
        assert_eq!(rendered.password_safe.ca_file, None);
        assert!(!rendered.password_safe.ca_only);
        // The app never mounts the CA or gets credentials.
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(pod["spec"]["containers"][0].get("env").is_none());

        let c = case(
            &[("secret-db", "a/b")],
            json!({"containers": [app(Some(7))]}),
            "credentials: {auth: oauth}\n",
        );
        let (pod, _) = patched(&c);
        let names: Vec<String> = pod["spec"]["initContainers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["PS_AGENT_CONFIG", "PS_CLIENT_ID", "PS_CLIENT_SECRET"]);
    }

    #[test]
    fn injected_containers_mount_the_no_token_volume_at_the_token_path() {
        let sa_mount =
            json!({"name": "kube-api-access-x", "mountPath": layout::SERVICE_ACCOUNT_DIR, "readOnly": true});
        let no_token = json!({"name": "ps-injector-no-token", "mountPath": layout::SERVICE_ACCOUNT_DIR, "readOnly": true});
        let mut app_c = app(Some(7));
        app_c["volumeMounts"] = json!([sa_mount]);
        let cases: [(&'static [(&'static str, &'static str)], bool); 2] = [
            (&[("env-X", "a/b"), ("mode", "init+sidecar")], false),
            (&[("secret-db", "a/b"), ("mode", "native-sidecar")], true),
        ];
        for (annotations, caonly) in cases {
            let config = if caonly {
                "passwordSafe:\n  url: https://ps.example.com/x\n  caBundle: {configMap: corp-ca}\n  caOnly: true\n"
            } else {
                URL
            };
            let c = Case {
                name: "no-token",
                annotations,
                spec: json!({"volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}], "containers": [app_c.clone()]}),
                config,
                job: false,
                expect: Ok(&[]),
            };
            let (pod, _) = patched(&c);
            let volumes = pod["spec"]["volumes"].as_array().unwrap();
            assert_eq!(
                volumes.last().unwrap(),
                &json!({"name": "ps-injector-no-token", "emptyDir": {"medium": "Memory", "sizeLimit": "4Ki"}})
            );
            let injected: Vec<&Value> = pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(pod["spec"]["containers"].as_array().unwrap().iter().skip(1))
                .collect();
            assert!(!injected.is_empty());
            for c in injected {
                let mounts = c["volumeMounts"].as_array().unwrap();
                assert_eq!(mounts.last().unwrap(), &no_token, "{}", c["name"]);
                let at_token_path = mounts
                    .iter()
                    .filter(|m| m["mountPath"] == layout::SERVICE_ACCOUNT_DIR)
                    .count();
                assert_eq!(at_token_path, 1, "{}", c["name"]);
            }
            // The app keeps the plugin's token mount and never gets ours.
            let app_mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
            assert_eq!(app_mounts[0], sa_mount);
            assert!(!app_mounts.iter().any(|m| m["name"] == "ps-injector-no-token"));
        }
    }

    #[test]
    fn the_status_path_is_the_escaped_pointer() {
        assert_eq!(
            STATUS_PATH,
            crate::patch::pointer(["metadata", "annotations", ann::STATUS])
        );
    }

    #[test]
    fn annotations_map_created_when_absent() {
        let meta: PodMeta<'_> = serde_json::from_str(r#"{"name": "p"}"#).unwrap();
        assert!(!meta.annotations.present);
        let spec_json = json!({"containers": [app(Some(1))]}).to_string();
        let pod = PodView {
            meta,
            spec: serde_json::from_str(&spec_json).unwrap(),
            runs_to_completion: false,
        };
        let config = Config::default();
        let injection = spec::build(
            [
                ("ps-injector.io/inject", "true"),
                ("ps-injector.io/secret-db", "a/b"),
            ]
            .into_iter(),
            "ns",
            &config,
        )
        .unwrap();
        let m = mutate(&pod, &injection, &config).unwrap();
        let last = m.patch.last().unwrap();
        assert_eq!(last.path, "/metadata/annotations");
        assert_eq!(last.value.get(), r#"{"ps-injector.io/status":"injected"}"#);
    }

    #[test]
    fn pod_view_parsing() {
        let meta: PodMeta<'_> = serde_json::from_str(
            r#"{"name":"a\u0062c","annotations":null,"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":"j"}]}"#,
        )
        .unwrap();
        assert_eq!(meta.name.unwrap().as_str(), "abc");
        assert!(!meta.annotations.present);
        let meta: PodMeta<'_> =
            serde_json::from_str(r#"{"ownerReferences":[{"kind":"ReplicaSet"}],"annotations":{"k":"v"}}"#)
                .unwrap();
        assert!(!meta.owned_by_job());
        assert_eq!(meta.annotations.get("k"), Some("v"));
        let meta: PodMeta<'_> = serde_json::from_str(r#"{"ownerReferences":[{"kind":"Job"}]}"#).unwrap();
        assert!(meta.owned_by_job());
        let spec: PodSpecView<'_> = serde_json::from_str(
            r#"{"containers":[{"name":"a","command":["x","y"],"volumeMounts":[{"name":"v","mountPath":"/m"}],"securityContext":{"runAsUser":3}}],"initContainers":null,"volumes":[{"name":"v","emptyDir":{}}],"securityContext":{"fsGroup":4},"restartPolicy":"Never","nodeName":"n"}"#,
        )
        .unwrap();
        assert_eq!(
            spec.containers.as_ref().unwrap()[0]
                .command
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert!(spec.init_containers.is_none());
        assert_eq!(spec.security_context.unwrap().fs_group, Some(4));
    }
}
