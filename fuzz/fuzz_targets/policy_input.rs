//! Policy input conversion: any JSON value, as the `input.review` of every kind the
//! shipped policies judge (the conversion into regorus' values, then evaluation with
//! its deadline). Nothing may panic; a value that cannot be converted must come back as
//! a policy error, which denies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandgate::policy::PolicySet;

fn shipped() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        PolicySet::load_dir(&dir, std::time::Duration::from_millis(100))
            .unwrap_or_else(|_| PolicySet::empty())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for kind in ["pod", "sandboxtemplate", "sandboxclaim"] {
        let _ = shipped().evaluate(kind, &review);
    }
});
