//! The dashboard during a live sweep and the final report, loaded in a real
//! headless browser (Debian's `chromium`).
//!
//! Fails on a JavaScript error in the console, a dashboard that never shows
//! its workers or figures, a figure the report links that is missing or
//! draws nothing. Screenshots of both pages are kept in
//! `$CD_ARTEFACTS_DIR` (default `target/artefacts`) for people to look at,
//! with one of the report's PNG figures.
//!
//! `scripts/test.sh` installs chromium where it can and sets `CD_CHROMIUM`;
//! without a browser on the machine these tests say so and do nothing.

use cd_tests::fixtures::*;
use cd_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The browser, if this machine has one.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CD_CHROMIUM") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Some(p)
        } else {
            missing(&format!("CD_CHROMIUM={} is not a file", p.display()))
        };
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("no chromium on this machine: browser tests skipped");
    }
    found
}

/// Where screenshots go.
fn artefacts() -> PathBuf {
    let dir = std::env::var_os("CD_ARTEFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/artefacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run headless chromium on `url` with `args`; returns (stdout, stderr).
fn headless(browser: &Path, url: &str, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Save a screenshot of `url` as `name` among the artefacts; fails when the
/// page rendered nothing (a blank page is under 10 kB).
fn screenshot(browser: &Path, url: &str, name: &str) {
    let shot = artefacts().join(name);
    let _ = std::fs::remove_file(&shot);
    headless(
        browser,
        url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1300,1600",
        ],
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot of {url} at {}",
        shot.display()
    );
}

/// Console lines that report a script error.
fn script_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .filter(|l| {
            l.contains("Uncaught")
                || l.contains("Error")
                || l.contains("error")
                || l.contains("Failed")
        })
        .collect()
}

/// The text between `<tag id="id"` and the element's end, roughly: enough to
/// check what the page rendered there.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at..];
    &rest[..rest.len().min(20_000)]
}

#[test]
fn the_dashboard_shows_a_live_sweep_and_the_report_draws_every_figure() {
    let (Some(browser), Some(models)) = (chromium(), tiny_models()) else {
        return;
    };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3", "qwen2_bias_tied"],
        300,
        &["none", "prefix-aaa-bbb"],
        &[0, 1],
    );
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    cluster.start_worker("w0", &["--max-tasks", "3"]).unwrap();
    cluster
        .wait_for_status("two cells complete", Duration::from_secs(240), |s| {
            s.completed >= 2
        })
        .unwrap();
    // The dashboard's figures come from the report, refreshed every few
    // seconds: wait until it holds curves.
    wait_for("figures for the dashboard", Duration::from_secs(60), || {
        let (code, body) = cluster.http_get("/api/figures").ok()?;
        (code == 200 && body.contains("\"series\"")).then_some(())
    })
    .unwrap();
    // Mid-sweep: w0 stops after three cells, so the sweep is still open.
    let login = format!(
        "http://127.0.0.1:{}/login?token={}",
        cluster.http_port, cluster.token
    );
    let (dom, log) = headless(&browser, &login, &["--dump-dom"]);
    let errors = script_errors(&log);
    assert!(
        errors.is_empty(),
        "the dashboard logged script errors: {errors:#?}"
    );
    assert!(
        element(&dom, "sweep").contains(SWEEP),
        "the dashboard does not name the sweep:\n{dom}"
    );
    assert!(
        element(&dom, "workers").contains("w0"),
        "the dashboard does not list worker w0:\n{}",
        element(&dom, "workers")
    );
    let figures = element(&dom, "figures");
    assert!(
        figures.contains("<svg") && (figures.contains("<polyline") || figures.contains("<path")),
        "the dashboard draws no figure after two cells:\n{figures}"
    );
    screenshot(&browser, &login, "dashboard-mid-sweep.png");

    // Finish the sweep; the coordinator writes the report into the store.
    cluster.start_worker("w1", &[]).unwrap();
    let done = assert_sweep_completes(&cluster, Duration::from_secs(240));
    let index = cluster.results_dir.join(SWEEP).join("report/index.html");
    wait_for("the final report", Duration::from_secs(60), || {
        let html = std::fs::read_to_string(&index).ok()?;
        html.contains(&format!("{} completed cells", done.total))
            .then_some(())
    })
    .unwrap();
    let url = format!("file://{}", index.display());
    let (dom, log) = headless(&browser, &url, &["--dump-dom"]);
    let errors = script_errors(&log);
    assert!(errors.is_empty(), "the report logged errors: {errors:#?}");
    let dir = index.parent().unwrap();
    let srcs: Vec<&str> = dom
        .split("<img src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    // 2 datasets' worth of curves (accuracy, F1, AUC per noise) and the heatmaps.
    assert!(
        srcs.len() >= 6,
        "the report shows {} figures:\n{dom}",
        srcs.len()
    );
    for src in &srcs {
        let svg = std::fs::read_to_string(dir.join(src))
            .unwrap_or_else(|e| panic!("the report links {src}, which is missing: {e}"));
        assert!(
            svg.contains("<polyline") || svg.contains("class=\"cell\""),
            "{src} draws nothing"
        );
        let csv = dir.join(src.replace(".svg", ".csv"));
        assert!(csv.is_file(), "{src} has no CSV beside it");
        // The PNG copy (default build): linked from its caption, a real PNG.
        let png_name = src.replace(".svg", ".png");
        assert!(
            dom.contains(&format!("href=\"{png_name}\"")),
            "{src}: no PNG link in the report"
        );
        let png = std::fs::read(dir.join(&png_name))
            .unwrap_or_else(|e| panic!("the report links {png_name}, which is missing: {e}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000,
            "{png_name} is not a drawn PNG ({} bytes)",
            png.len()
        );
    }
    // One PNG figure among the artefacts, for people to look at.
    let first_png = srcs[0].replace(".svg", ".png");
    std::fs::copy(dir.join(&first_png), artefacts().join("report-figure.png")).unwrap();
    for needle in ["majority baseline", "class=\"converging\""] {
        assert!(
            srcs.iter().any(|src| std::fs::read_to_string(dir.join(src))
                .unwrap()
                .contains(needle)),
            "no figure shows `{needle}`"
        );
    }
    screenshot(&browser, &url, "report.png");
}
