//! Spawn + wait of `true`: childproc (default options, and without a
//! process group) against plain `tokio::process`, in one criterion group on
//! one current-thread runtime.

use std::hint::black_box;
use std::process::Command;

use childproc::{Child, Isolation, Options};
use criterion::{Criterion, criterion_group, criterion_main};

fn spawn_and_wait(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("spawn_wait_true");
    group.bench_function("tokio_process", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut child = tokio::process::Command::new("true").spawn().expect("spawn");
                let status = child.wait().await.expect("wait");
                assert!(black_box(status).success());
            });
        });
    });
    group.bench_function("childproc", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let child = Child::spawn(Command::new("true"), Options::new()).expect("spawn");
                let status = child.wait().await.expect("wait");
                assert!(black_box(status).success());
            });
        });
    });
    group.bench_function("childproc_no_group", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let options = Options::new().isolation(Isolation::None);
                let child = Child::spawn(Command::new("true"), options).expect("spawn");
                let status = child.wait().await.expect("wait");
                assert!(black_box(status).success());
            });
        });
    });
    group.finish();
}

criterion_group!(benches, spawn_and_wait);
criterion_main!(benches);
