//! One view over the three container lists of a pod. `Container` and
//! `EphemeralContainer` are distinct types in k8s-openapi with the same security-relevant
//! fields; the rules are written once against this trait.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EphemeralContainer, Lifecycle, PodSpec, Probe,
    ResourceRequirements, SecurityContext,
};

pub trait ContainerLike {
    fn name(&self) -> &str;
    fn security_context(&self) -> Option<&SecurityContext>;
    fn security_context_mut(&mut self) -> &mut Option<SecurityContext>;
    fn resources(&self) -> Option<&ResourceRequirements>;
    fn resources_mut(&mut self) -> &mut Option<ResourceRequirements>;
    fn ports(&self) -> &[ContainerPort];
    fn probes(&self) -> [(&'static str, Option<&Probe>); 3];
    fn lifecycle(&self) -> Option<&Lifecycle>;
    fn env(&self) -> &[EnvVar];
    fn env_from(&self) -> &[EnvFromSource];
}

macro_rules! container_like {
    ($t:ty) => {
        impl ContainerLike for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn security_context(&self) -> Option<&SecurityContext> {
                self.security_context.as_ref()
            }
            fn security_context_mut(&mut self) -> &mut Option<SecurityContext> {
                &mut self.security_context
            }
            fn resources(&self) -> Option<&ResourceRequirements> {
                self.resources.as_ref()
            }
            fn resources_mut(&mut self) -> &mut Option<ResourceRequirements> {
                &mut self.resources
            }
            fn ports(&self) -> &[ContainerPort] {
                self.ports.as_deref().unwrap_or_default()
            }
            fn probes(&self) -> [(&'static str, Option<&Probe>); 3] {
                [
                    ("livenessProbe", self.liveness_probe.as_ref()),
                    ("readinessProbe", self.readiness_probe.as_ref()),
                    ("startupProbe", self.startup_probe.as_ref()),
                ]
            }
            fn lifecycle(&self) -> Option<&Lifecycle> {
                self.lifecycle.as_ref()
            }
            fn env(&self) -> &[EnvVar] {
                self.env.as_deref().unwrap_or_default()
            }
            fn env_from(&self) -> &[EnvFromSource] {
                self.env_from.as_deref().unwrap_or_default()
            }
        }
    };
}

container_like!(Container);
container_like!(EphemeralContainer);

/// Which list a container sits in; ephemeral containers may not carry resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ListKind {
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Containers => "containers",
            ListKind::InitContainers => "initContainers",
            ListKind::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// Every container of a pod spec with its list and index, in API order.
pub fn all(spec: &PodSpec) -> impl Iterator<Item = (ListKind, usize, &dyn ContainerLike)> {
    let regular = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (ListKind::Containers, i, c as &dyn ContainerLike));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (ListKind::InitContainers, i, c as &dyn ContainerLike));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (ListKind::EphemeralContainers, i, c as &dyn ContainerLike));
    regular.chain(init).chain(ephemeral)
}
