//! `dace web ...`: stage data for the browser demo (web/) and serve it on 127.0.0.1.
//!
//! The server is deliberately small (std only, GET of files under one folder, loopback only): it
//! exists so the demo and its end-to-end test run without any other tool.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use clap::{Args, Subcommand};

use crate::device::CpuBackend;
use crate::expand::Expander;
use crate::package::Package;
use crate::prior::bundle::Prior;

#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// Copy a package and its prior into the page's data folder (with an index of the files) and
    /// write the native CPU regeneration of one (patch, seed) that the browser test compares with.
    Data(WebDataArgs),
    /// Serve a built page (web/build.sh) over HTTP on 127.0.0.1 only.
    Serve(WebServeArgs),
}

#[derive(Args, Debug)]
pub struct WebDataArgs {
    #[arg(long)]
    pub package: PathBuf,
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// The page's data folder (web/dist/data after web/build.sh).
    #[arg(long)]
    pub out: PathBuf,
    /// The (patch, seed number) regenerated natively into `expected.json`.
    #[arg(long, default_value_t = 0)]
    pub item: usize,
    #[arg(long, default_value_t = 0)]
    pub seed_index: usize,
}

#[derive(Args, Debug)]
pub struct WebServeArgs {
    /// Folder to serve (web/dist after web/build.sh).
    #[arg(long, default_value = "web/dist")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

pub fn run(cmd: WebCommand) -> anyhow::Result<()> {
    match cmd {
        WebCommand::Data(args) => data(args),
        WebCommand::Serve(args) => serve(args),
    }
}

#[derive(Serialize)]
struct Index {
    files: Vec<String>,
}

#[derive(Serialize)]
struct Expected {
    item: usize,
    seed: u64,
    width: usize,
    height: usize,
    channels: usize,
    /// `[-1, 1]` CHW pixels of the native CPU regeneration (batch of one, as the page runs it).
    pixels: Vec<f32>,
}

fn data(args: WebDataArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let pkg = Package::load(&args.package)?;
    let prior = args.prior.as_deref().map(|p| Prior::<CpuBackend>::load(p, &device)).transpose()?;
    let prior = prior.map(|p| p.with_unet_dtype(pkg.manifest.expansion.unet_dtype.float())).transpose()?;
    let seed = *pkg.manifest.seeds.get(args.seed_index).with_context(|| {
        format!("--seed-index {}: {} holds {} seeds", args.seed_index, args.package.display(), pkg.manifest.seeds.len())
    })?;
    anyhow::ensure!(
        args.item < pkg.manifest.items.len(),
        "--item {}: {} holds {} patches",
        args.item,
        args.package.display(),
        pkg.manifest.items.len()
    );
    pkg.manifest.check_prior(prior.as_ref().map(|p| p.fingerprint.as_str()))?;
    let _ = std::fs::remove_dir_all(&args.out);
    let mut files = Vec::new();
    for name in ["manifest.json", "patches.bin", "labels.bin"] {
        let to = args.out.join("package").join(name);
        std::fs::create_dir_all(to.parent().expect("parent"))?;
        std::fs::copy(args.package.join(name), &to)?;
        files.push(format!("package/{name}"));
    }
    if let Some(dir) = &args.prior {
        // The prior's own files only (not its training state or sample grids).
        for rel in crate::prior::bundle::prior_files(dir)? {
            let to = args.out.join("prior").join(&rel);
            std::fs::create_dir_all(to.parent().expect("parent"))?;
            std::fs::copy(dir.join(&rel), &to).with_context(|| format!("copying {}", dir.join(&rel).display()))?;
            files.push(format!("prior/{rel}"));
        }
    }
    files.sort();
    crate::fsio::write_json(&args.out.join("index.json"), &Index { files: files.clone() })?;

    let m = &pkg.manifest;
    let expander = Expander::for_manifest(prior.as_ref(), m, &pkg.patches, 1, &device)?;
    let decoded: Vec<f32> = expander.expand_tensor(&[args.item], seed).into_data().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pixels = expander.to_image_size(decoded);
    let [height, width] = m.image_size;
    let expected = Expected { item: args.item, seed, width, height, channels: m.channels, pixels };
    crate::fsio::write_json(&args.out.join("expected.json"), &expected)?;
    println!("{} files in {} (+ expected.json: patch {} under seed {seed}, native CPU)", files.len(), args.out.display(), args.item);
    Ok(())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// The file a request path names under `root`, or `None` for anything that leaves it.
fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let path = request_path.split(['?', '#']).next().unwrap_or("/");
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    Some(if full.is_dir() { full.join("index.html") } else { full })
}

fn respond(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut line)?;
    // Drain the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let file = (method == "GET").then(|| resolve(root, target)).flatten();
    match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
        Some((path, body)) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                content_type(&path),
                body.len()
            )?;
            stream.write_all(&body)
        }
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"),
    }
}

fn serve(args: WebServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.dir.join("index.html").is_file(), "{} has no index.html: build the page first (web/build.sh)", args.dir.display());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)).with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    println!("serving {} on http://127.0.0.1:{}/", args.dir.display(), listener.local_addr()?.port());
    for stream in listener.incoming() {
        let root = args.dir.clone();
        match stream {
            Ok(s) => {
                std::thread::spawn(move || {
                    let _ = respond(s, &root);
                });
            }
            Err(e) => eprintln!("connection failed: {e}"),
        }
    }
    Ok(())
}
