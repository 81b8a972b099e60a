//! build.rs's half for the `kernel-emu` feature: compiles every `kernels/*.cu` with the host C++
//! compiler against the emulator's shim (`kernels/emu/cuda_emu.h`) into one static library with
//! the emulator's runtime, so the kernels run on the CPU (device/kernel_emu.rs). No CUDA needed.
//!
//! Each kernel file gets a generated translation unit that includes the shim, the file, and a
//! table of the file's `extern "C"` kernels; the names are read from the file preprocessed against
//! the shim (the exported names are made by macros), from the lines that come from the file itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Builds the emulator's static library; with `fake_driver` (the `cuda` feature on too), also the
/// emulated CUDA driver and cuBLAS as shared libraries in `OUT_DIR/fake-cuda`
/// (device/cuda/emulated.rs loads them when there is no real driver).
pub fn build(
    kernels: &Path,
    sources: &[PathBuf],
    out: &Path,
    fake_driver: bool,
) -> Result<(), String> {
    let emu = kernels.join("emu");
    let gen = out.join("emu");
    std::fs::create_dir_all(&gen).map_err(|e| e.to_string())?;
    println!("cargo:rerun-if-changed={}", emu.display());

    let mut build = base(&emu);
    build.file(emu.join("runtime.cc"));
    build.file(emu.join("torn_hooks.cc"));
    let mut registry = String::from("#include \"registry.h\"\n#include <string.h>\n");
    let mut tables = Vec::new();
    let mut names_of = std::collections::HashMap::new();
    for src in sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap()
            .to_string();
        let includes = format!(
            "#include \"cuda_emu.h\"\n#include \"registry.h\"\n#include {:?}\n",
            src.display().to_string()
        );
        let pre = gen.join(format!("{stem}.names.cc"));
        std::fs::write(&pre, &includes).map_err(|e| e.to_string())?;
        let expanded = base(&emu)
            .file(&pre)
            .try_expand()
            .map_err(|e| format!("preprocessing {}: {e}", src.display()))?;
        let names = kernel_names(&String::from_utf8_lossy(&expanded), src);
        if names.is_empty() {
            return Err(format!(
                "no extern \"C\" kernels found in {}",
                src.display()
            ));
        }
        let entries: Vec<(String, String)> = names.iter().map(|n| (n.clone(), n.clone())).collect();
        let unit = gen.join(format!("{stem}.cc"));
        std::fs::write(&unit, table_unit(&includes, &entries, &stem)).map_err(|e| e.to_string())?;
        build.file(unit);
        tables.push(stem);
        names_of.insert(src.file_name().unwrap().to_owned(), names);
    }
    let mut torn = torn_build(&emu);
    for m in crate::mutants::MUTANTS {
        let names = names_of
            .get(std::ffi::OsStr::new(m.kernels))
            .ok_or_else(|| format!("mutant {}: no kernel file {}", m.name, m.kernels))?;
        let unit = mutant_unit(kernels, &gen, m, names)?;
        if m.torn {
            torn.file(unit);
        } else {
            build.file(unit);
        }
        tables.push(format!("mutant_{}", m.name));
    }
    for t in &tables {
        writeln!(
            registry,
            "extern \"C\" const ::tandem_emu::Entry* tandem_emu_table_{t}(size_t*);"
        )
        .unwrap();
    }
    registry.push_str(
        "const ::tandem_emu::Entry* ::tandem_emu::find_entry(const char* name) {\n    \
         const ::tandem_emu::Entry* (*tables[])(size_t*) = {",
    );
    for t in &tables {
        write!(registry, "tandem_emu_table_{t}, ").unwrap();
    }
    registry.push_str(
        "};\n    for (auto table : tables) {\n        size_t n = 0;\n        \
         const ::tandem_emu::Entry* e = table(&n);\n        \
         for (size_t i = 0; i < n; ++i) if (strcmp(e[i].name, name) == 0) return &e[i];\n    \
         }\n    return nullptr;\n}\n",
    );
    let reg = gen.join("registry.cc");
    std::fs::write(&reg, registry).map_err(|e| e.to_string())?;
    build.file(reg);
    let mut objects = build
        .try_compile_intermediates()
        .map_err(|e| format!("compiling the kernel emulator: {e}"))?;
    objects.extend(
        torn.try_compile_intermediates()
            .map_err(|e| format!("compiling the torn mutants: {e}"))?,
    );
    let mut archive = base(&emu);
    for o in &objects {
        archive.object(o);
    }
    archive
        .try_compile("tandem_kernel_emu")
        .map_err(|e| format!("archiving the kernel emulator: {e}"))?;
    if fake_driver {
        fake_libraries(&emu, &objects, out)?;
    }
    Ok(())
}

/// `libcuda.so` (the emulator with fake_cuda.cc) and the `libcuda.so`-linked `libcublas.so`
/// (fake_cublas.cc) and `libcublasLt.so` (fake_cublaslt.cc), each under the soname cudarc asks
/// the dynamic loader for.
fn fake_libraries(emu: &Path, emulator: &[PathBuf], out: &Path) -> Result<(), String> {
    let dir = out.join("fake-cuda");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let compile = |file: &str| {
        base(emu)
            .file(emu.join(file))
            .try_compile_intermediates()
            .map_err(|e| format!("compiling {file}: {e}"))
    };
    let link = |name: &str, objects: &[PathBuf], extra: &[&str]| -> Result<(), String> {
        let mut cmd = base(emu).get_compiler().to_command();
        cmd.arg("-shared")
            .arg(format!("-Wl,-soname,{name}"))
            // The library's own definitions win over any same-named symbol already loaded (the
            // test binaries link the emulator statically too).
            .arg("-Wl,-Bsymbolic")
            .arg("-o")
            .arg(dir.join(name))
            .args(objects)
            .args(extra)
            .arg("-lpthread");
        let status = cmd.status().map_err(|e| format!("linking {name}: {e}"))?;
        if !status.success() {
            return Err(format!("linking {name} failed: {status}"));
        }
        Ok(())
    };
    let mut driver = emulator.to_vec();
    driver.extend(compile("fake_cuda.cc")?);
    link("libcuda.so", &driver, &[])?;
    let dir_arg = format!("-L{}", dir.display());
    for (lib, source) in [
        ("libcublas.so", "fake_cublas.cc"),
        ("libcublasLt.so", "fake_cublaslt.cc"),
    ] {
        link(
            lib,
            &compile(source)?,
            &[&dir_arg, "-lcuda", "-Wl,-rpath,$ORIGIN"],
        )?;
    }
    println!("cargo:rustc-env=TANDEM_FAKE_CUDA_DIR={}", dir.display());
    Ok(())
}

/// A translation unit: `includes`, then the table `tandem_emu_table_<table>` of `entries`
/// (registry name, C++ name of the kernel).
fn table_unit(includes: &str, entries: &[(String, String)], table: &str) -> String {
    let mut tu = includes.to_string();
    tu.push_str("namespace {\nconst ::tandem_emu::Entry kEntries[] = {\n");
    for (name, k) in entries {
        writeln!(tu, "    TANDEM_EMU_KERNEL_AS({name:?}, {k}),").unwrap();
    }
    writeln!(
        tu,
        "}};\n}}\nextern \"C\" const ::tandem_emu::Entry* tandem_emu_table_{table}(size_t* n) {{\n    \
         *n = sizeof(kEntries) / sizeof(kEntries[0]);\n    return kEntries;\n}}"
    )
    .unwrap();
    tu
}

/// A mutant's translation unit: copies of its kernel file and of the edited file (the edit
/// applied) in a folder of their own, so the copy's quoted includes find the edited header
/// first; the copy is included inside a namespace, with `extern "C"` dropped, so its kernels do
/// not collide with the originals, and registered as `<name>/<kernel>`.
fn mutant_unit(
    kernels: &Path,
    gen: &Path,
    m: &crate::mutants::Mutant,
    names: &[String],
) -> Result<PathBuf, String> {
    let dir = gen.join("mutants").join(m.name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let read = |f: &str| {
        std::fs::read_to_string(kernels.join(f)).map_err(|e| format!("mutant {}: {f}: {e}", m.name))
    };
    let edited = read(m.edited)?;
    let found = edited.matches(m.find).count();
    if found != 1 {
        return Err(format!(
            "mutant {}: {:?} occurs {found} times in {}, not once",
            m.name, m.find, m.edited
        ));
    }
    let edited = edited.replacen(m.find, m.replace, 1);
    let mut source = if m.edited == m.kernels {
        edited
    } else {
        std::fs::write(dir.join(m.edited), edited).map_err(|e| e.to_string())?;
        read(m.kernels)?
    };
    source = source.replace("extern \"C\"", "");
    let copy = dir.join(m.kernels);
    std::fs::write(&copy, source).map_err(|e| e.to_string())?;
    let ns = format!("tandem_mutant_{}", m.name);
    let includes = format!(
        "#include \"cuda_emu.h\"\n#include \"registry.h\"\nnamespace {ns} {{\n#include {:?}\n}}\n",
        copy.display().to_string()
    );
    let entries: Vec<(String, String)> = names
        .iter()
        .map(|k| (format!("{}/{k}", m.name), format!("{ns}::{k}")))
        .collect();
    let unit = gen.join(format!("mutant_{}.cc", m.name));
    std::fs::write(
        &unit,
        table_unit(&includes, &entries, &format!("mutant_{}", m.name)),
    )
    .map_err(|e| e.to_string())?;
    Ok(unit)
}

/// The build of the torn mutants (kernels/emu/mutants.rs): GCC's thread-sanitizer instrumentation
/// calls a hook before every plain load and store; the emulator's runtime defines the hooks (no
/// sanitizer runtime is linked) and may switch fibers before a store. Function entry and exit
/// hooks are left out.
fn torn_build(emu: &Path) -> cc::Build {
    let mut b = base(emu);
    b.flag("-fsanitize=thread")
        .flag("--param=tsan-instrument-func-entry-exit=0")
        .define("TANDEM_EMU_TORN", None);
    b
}

fn base(emu: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .include(emu)
        // The unedited headers of a mutant's copied kernel file (mutant_unit).
        .include(emu.parent().unwrap())
        // The kernels' `#pragma unroll` etc. mean nothing to the host compiler.
        .warnings(false)
        .flag("-w")
        // As on the device: no contraction of a*b+c into an fma the kernel did not write.
        .flag("-ffp-contract=off")
        .cargo_warnings(false);
    b
}

/// The names after `extern "C" void` on the lines the preprocessor attributes to `src`.
fn kernel_names(expanded: &str, src: &Path) -> Vec<String> {
    let src_name = src.display().to_string();
    let mut in_src = false;
    let mut names = Vec::new();
    for line in expanded.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            // A line marker: `# <line> "<file>" <flags>`.
            if let Some(file) = rest.split('"').nth(1) {
                in_src = file == src_name;
            }
            continue;
        }
        if !in_src {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("extern \"C\"") {
            rest = &rest[at + "extern \"C\"".len()..];
            let mut words = rest.trim_start().splitn(2, char::is_whitespace);
            if words.next() != Some("void") {
                continue;
            }
            let after = words.next().unwrap_or("").trim_start();
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && after[name.len()..].trim_start().starts_with('(') {
                names.push(name);
            }
        }
    }
    names
}
