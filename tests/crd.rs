//! The committed CRD files are exactly what `hapair crd` generates from the Rust types: one place
//! defines the resource; the YAML is never edited by hand (STYLE: "YAML is generated, never
//! hand-kept twice").

use std::path::Path;

/// Every committed copy of the CRD, relative to the crate root.
const COPIES: [&str; 2] = [
    "deploy/crd.yaml",
    "charts/hapair/crds/hapair.io_hapairs.yaml",
];

#[test]
fn committed_crd_files_match_the_generated_crd() {
    let generated = hapair::crd::definition_yaml().expect("the CRD serializes to YAML");
    for copy in COPIES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(copy);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{copy} differs from the CRD generated from src/crd.rs: run deploy/generate.sh \
             (it rewrites every copy) and commit them"
        );
    }
}

#[test]
fn hapair_crd_prints_the_generated_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hapair"))
        .arg("crd")
        .output()
        .expect("run hapair crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    assert_eq!(printed, hapair::crd::definition_yaml().unwrap());
}
