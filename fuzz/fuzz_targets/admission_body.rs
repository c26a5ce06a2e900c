//! Request body → decision (see `checks/admission_body.rs` for what is asserted).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandgate::config::Config;
use sandgate::policy::PolicySet;

#[path = "../checks/admission_body.rs"]
mod checks;

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
    checks::check(data, cfg, policies);
});
