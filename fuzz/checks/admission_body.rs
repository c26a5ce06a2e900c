//! What the `admission_body` fuzz target asserts for one input, shared with the
//! regression test (`tests/fuzz_regressions.rs`) that replays every input it ever
//! crashed on: any bytes through the AdmissionReview parser, both webhooks of the
//! pipeline with the shipped policies, the answer's encoding, and (when the mutation
//! patches) the validating call on the patched object, as the apiserver sends it.
//! Nothing may panic, and an allowed answer must never carry a patch that does not
//! apply to the object it was made for.

use sandgate::admission::{Webhook, admit, review};
use sandgate::config::Config;
use sandgate::policy::PolicySet;

pub fn check(data: &[u8], cfg: &Config, policies: &PolicySet) {
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
            "sandgate's own patch must apply to the object it was made for: {patch:?}"
        );
    }
    let validated = admit(Webhook::Validate, &req, cfg, policies);
    let _ = review::encode(&req.uid, &validated);
}
