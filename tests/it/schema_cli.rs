//! `pprl schema init` and `pprl schema check`.

use crate::util::{fixture, run_ok, run_pprl, temp_dir};

#[test]
fn init_prints_a_schema_that_check_accepts() {
    let dir = temp_dir();
    let out = run_ok(["schema", "init"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("schema init prints JSON");
    assert!(
        json["features"].as_array().is_some_and(|f| !f.is_empty()),
        "{text}"
    );
    let path = dir.path().join("linkage.json");
    std::fs::write(&path, &text).unwrap();

    let out = run_ok([
        std::ffi::OsStr::new("schema"),
        "check".as_ref(),
        path.as_os_str(),
    ]);
    let summary = String::from_utf8(out.stdout).unwrap();
    let schema = pprl::schema::Schema::from_file(&path).unwrap();
    assert!(summary.contains("valid"), "{summary}");
    assert!(summary.contains(&schema.fingerprint()), "{summary}");
    for column in schema.identifying_columns() {
        assert!(
            summary.contains(column),
            "{column} missing from:\n{summary}"
        );
    }
}

#[test]
fn check_accepts_the_clkhash_schemas() {
    for name in [
        "clkhash_v3_blake.schema.json",
        "clkhash_v3_doublehash.schema.json",
    ] {
        let out = run_ok([
            std::ffi::OsStr::new("schema"),
            "check".as_ref(),
            fixture(name).as_os_str(),
        ]);
        let summary = String::from_utf8(out.stdout).unwrap();
        assert!(summary.contains("1024"), "{summary}");
    }
}

#[test]
fn check_names_the_problem_of_a_broken_schema() {
    let dir = temp_dir();
    let check = |path: &std::path::Path| {
        let out = run_pprl([
            std::ffi::OsStr::new("schema"),
            "check".as_ref(),
            path.as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };

    // Not JSON at all.
    let path = dir.path().join("truncated.json");
    std::fs::write(&path, "{\"version\": 3, \"features\": [").unwrap();
    let stderr = check(&path);
    assert!(
        stderr.contains("truncated.json") && stderr.contains("line"),
        "{stderr}"
    );

    // JSON, but a filter length that is not a number.
    let text = std::fs::read_to_string(fixture("clkhash_v3_blake.schema.json"))
        .unwrap()
        .replace("\"l\": 1024", "\"l\": \"long\"");
    let path = dir.path().join("bad_l.json");
    std::fs::write(&path, text).unwrap();
    let stderr = check(&path);
    assert!(
        stderr.contains("bad_l.json") && stderr.contains("long"),
        "{stderr}"
    );

    // A file that does not exist.
    let stderr = check(&dir.path().join("absent.json"));
    assert!(stderr.contains("absent.json"), "{stderr}");
}
