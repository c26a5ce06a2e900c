//! Request body → decision: any bytes through the AdmissionReview parser, both webhooks
//! of the pipeline with the shipped policies, the answer's encoding, and (when the
//! mutation patches) the validating call on the patched object, as the apiserver sends
//! it. Nothing may panic, and an allowed answer must never carry a patch that does not
//! apply to the object it was made for.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandgate::admission::{Webhook, admit, review};
use sandgate::config::Config;
use sandgate::policy::PolicySet;

fn shipped() -> &'static (Config, PolicySet) {
    static SET: OnceLock<(Config, PolicySet)> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let policies = PolicySet::load_dir(&dir, std::time::Duration::from_millis(100))
            .unwrap_or_else(|_| PolicySet::empty());
        (Config::default(), policies)
    })
}

fuzz_target!(|data: &[u8]| {
    let (cfg, policies) = shipped();
    let Ok(mut req) = review::parse(data) else {
        return;
    };
    let mutated = admit(Webhook::Mutate, &req, cfg, policies);
    let _ = review::encode(&req.uid, &mutated);
    if mutated.allowed
        && let (Some(patch), Some(object)) = (mutated.patch.as_ref(), req.object.as_mut())
    {
        assert!(
            json_patch::patch(object, &patch.0).is_ok(),
            "sandgate's own patch must apply to the object it was made for"
        );
    }
    let validated = admit(Webhook::Validate, &req, cfg, policies);
    let _ = review::encode(&req.uid, &validated);
});
