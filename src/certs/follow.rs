//! Every replica's side of self-managed TLS: watch the Secret and hand each new serving
//! pair to the server, which checks it and swaps it in (or keeps the previous one).

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;

use crate::contract::tls as keys;

/// A serving pair as PEM bytes: certificate chain, key.
pub type Pair = (Vec<u8>, Vec<u8>);

fn pair_of(secret: &Secret) -> Option<Pair> {
    let data = secret.data.as_ref()?;
    let cert = data.get(keys::TLS_CERT)?.0.clone();
    let key = data.get(keys::TLS_KEY)?.0.clone();
    Some((cert, key))
}

/// Watches `namespace/name` and publishes its pair whenever it changes. A deleted
/// Secret publishes nothing: the last pair keeps serving until a new one arrives.
pub fn follow(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> (watch::Receiver<Option<Pair>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let label = format!("{namespace}/{name}");
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(secret) => {
                    if let Some(pair) = pair_of(&secret) {
                        tx.send_if_modified(|current| {
                            let changed = current.as_ref() != Some(&pair);
                            if changed {
                                *current = Some(pair);
                            }
                            changed
                        });
                    }
                }
                Err(e) => tracing::warn!(secret = %label, error = %e, "watching the TLS Secret"),
            }
        }
    });
    (rx, task)
}
