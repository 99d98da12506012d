//! Fast checks of the cross-build and packaging files (the slow cross check itself is
//! `cross/check.sh`, outside CI): the target package list is the one source of truth of
//! the cross images and of the sysroot script, Cross.toml points at images that exist,
//! and every file the .deb installs is in the repository.

use std::fs;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn toml_file(path: &str) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not TOML: {e}"))
}

/// `(package, use)` for every line of cross/target-packages.txt, checking its format the
/// way cross/target-packages.sh does.
fn target_packages() -> Vec<(String, String)> {
    let text = read("cross/target-packages.txt");
    let mut packages = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            [name, usage @ ("build" | "run")] => {
                packages.push(((*name).to_owned(), (*usage).to_owned()))
            }
            _ => panic!(
                "cross/target-packages.txt:{}: expected `<package> build|run`, got `{line}`",
                number + 1
            ),
        }
    }
    packages
}

#[test]
fn target_packages_hold_every_dev_package_the_crate_links_and_the_qemu_plugins() {
    let packages = target_packages();
    let has = |name: &str, usage: &str| packages.iter().any(|(n, u)| n == name && u == usage);
    for dev in [
        "libc6-dev",
        "libgstreamer1.0-dev",
        "libgstreamer-plugins-base1.0-dev",
        "libgstreamer-plugins-bad1.0-dev",
        "libasound2-dev",
        "libv4l-dev",
        "libsystemd-dev",
    ] {
        assert!(has(dev, "build"), "{dev} missing as `build`");
    }
    for plugins in [
        "gstreamer1.0-plugins-base",
        "gstreamer1.0-plugins-good",
        "gstreamer1.0-plugins-bad",
        "gstreamer1.0-nice",
    ] {
        assert!(has(plugins, "run"), "{plugins} missing as `run`");
    }
    let mut names: Vec<&str> = packages.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a package is listed twice");
}

#[test]
fn cross_images_and_the_sysroot_script_read_the_same_package_list() {
    // The images install `target-packages.sh build` (through install-target-packages.sh)
    // and nothing else of the target architecture...
    let install = read("cross/install-target-packages.sh");
    assert!(install.contains("target-packages.sh\" build"), "{install}");
    assert_eq!(
        install.matches(":$arch").count(),
        1,
        "install-target-packages.sh installs target packages besides the list"
    );
    assert!(install.contains("\"${packages[@]/%/:$arch}\""), "{install}");
    // ...and the sysroot holds `target-packages.sh all`, naming no package itself.
    let lib = read("cross/lib.sh");
    assert!(lib.contains("target-packages.sh\" all"), "{lib}");
    assert!(lib.contains("--include=\"$packages\""), "{lib}");
    for (name, _) in target_packages() {
        let names_it = lib
            .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .any(|word| word == name);
        assert!(
            !names_it,
            "cross/lib.sh names {name} itself: keep it in cross/target-packages.txt only"
        );
    }
}

#[test]
fn cross_toml_points_each_board_target_at_a_bookworm_image_of_the_shared_list() {
    let cross = toml_file("Cross.toml");
    for (triple, deb_arch) in [
        ("aarch64-unknown-linux-gnu", "arm64"),
        ("armv7-unknown-linux-gnueabihf", "armhf"),
    ] {
        let dockerfile = &cross["target"][triple]["dockerfile"];
        let file = dockerfile["file"].as_str().unwrap_or_default();
        let context = dockerfile["context"].as_str().unwrap_or_default();
        let text = read(file);
        assert!(
            text.lines()
                .any(|l| l.starts_with("FROM ") && l.contains("bookworm")),
            "{file}: not bookworm-based"
        );
        assert!(text.contains("COPY target-packages.txt"), "{file}");
        assert!(
            text.contains(&format!("install-target-packages.sh {deb_arch} ")),
            "{file}: does not install the {deb_arch} packages"
        );
        // Everything the Dockerfile copies is in its build context.
        for copied in [
            "target-packages.txt",
            "target-packages.sh",
            "install-target-packages.sh",
        ] {
            assert!(
                repo(context).join(copied).is_file(),
                "{context}/{copied} missing"
            );
        }
    }
}

#[test]
fn every_file_the_deb_installs_is_in_the_repository() {
    let cargo = toml_file("Cargo.toml");
    let deb = &cargo["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("deb assets");
    let mut targets = Vec::new();
    for asset in assets {
        let source = asset[0].as_str().expect("asset source");
        targets.push(asset[1].as_str().expect("asset target").to_owned());
        if source.starts_with("target/") {
            continue; // built by cargo
        }
        if let Some((dir, suffix)) = source.split_once("/*") {
            // A glob (`docs/*.md`): at least one file matches.
            let matches = std::fs::read_dir(repo(dir))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                        .count()
                })
                .unwrap_or(0);
            assert!(matches > 0, "deb asset {source} matches nothing");
            continue;
        }
        assert!(repo(source).is_file(), "deb asset {source} missing");
    }
    assert!(targets.iter().any(|t| t == "usr/bin/"), "{targets:?}");
    assert!(
        targets.iter().any(|t| t == "etc/roomcast/roomcast.toml"),
        "{targets:?}"
    );

    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    for script in ["postinst", "postrm"] {
        let text = read(&format!("{scripts}{script}"));
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        assert!(text.contains("#DEBHELPER#"), "{script}: no #DEBHELPER#");
    }
    assert!(read(&format!("{scripts}postinst")).contains("adduser --quiet roomcast \"$group\""));

    let units = deb["systemd-units"]["unit-scripts"]
        .as_str()
        .expect("unit-scripts");
    let unit = read(&format!("{units}roomcast.service"));
    for line in [
        "ExecStart=/usr/bin/roomcast run --config /etc/roomcast/roomcast.toml",
        "User=roomcast",
        "StateDirectory=roomcast",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
}

/// The package names of a `depends` field, without versions (`$auto` kept as a name).
fn dependency_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(|d| d.split('(').next().unwrap_or_default().trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect()
}

#[test]
fn the_debian13_package_names_the_libraries_trixie_renamed_and_keeps_the_rest() {
    let cargo = toml_file("Cargo.toml");
    let deb = &cargo["package"]["metadata"]["deb"];
    let bookworm = dependency_names(deb["depends"].as_str().expect("depends"));
    let variant = &deb["variants"]["debian13"];
    assert_eq!(
        variant["name"].as_str(),
        Some("roomcast"),
        "same package name"
    );
    let trixie = dependency_names(variant["depends"].as_str().expect("debian13 depends"));
    // dpkg-shlibdeps on a Debian 12 build machine would write Debian 12's names.
    assert!(!trixie.iter().any(|d| d == "$auto"), "{trixie:?}");
    // Debian 13's 64-bit time_t transition renamed these (the binary links both).
    for (old, new) in [
        ("libasound2", "libasound2t64"),
        ("libglib2.0-0", "libglib2.0-0t64"),
    ] {
        assert!(bookworm.iter().any(|d| d == old), "Debian 12 lacks {old}");
        assert!(trixie.iter().any(|d| d == new), "Debian 13 lacks {new}");
        assert!(!trixie.iter().any(|d| d == old), "Debian 13 names {old}");
    }
    // Everything else (GStreamer, the plugins, adduser) is the same in both releases.
    for name in &bookworm {
        if name != "$auto" && name != "libasound2" && name != "libglib2.0-0" {
            assert!(trixie.contains(name), "Debian 13 lacks {name}");
        }
    }
    let script = read("scripts/test-deb.sh");
    assert!(
        script.contains("variant=(--variant \"$release\")"),
        "test-deb.sh"
    );
}
