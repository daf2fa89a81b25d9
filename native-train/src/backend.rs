//! `--backend`: picks the burn backend at run time among those compiled in, then runs a job
//! generic over it. Heavy backends (wgpu, cuda) are cargo features so default builds stay lean.

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The fastest CPU backend compiled in (flex, then ndarray, then candle).
    Cpu,
    /// burn-flex: gemm-based, SIMD, multi-threaded CPU backend.
    Flex,
    /// burn-ndarray CPU backend.
    Ndarray,
    /// burn-candle CPU backend.
    Candle,
    /// wgpu (Vulkan/Metal/DX12); build with `--features wgpu`.
    Wgpu,
    /// CUDA; build with `--features cuda`.
    Cuda,
}

/// Work that runs on whatever backend the user picked.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;
}

pub fn run<J: BackendJob>(choice: BackendChoice, job: J) -> Result<J::Output> {
    match choice {
        BackendChoice::Cpu => run_cpu(job),
        BackendChoice::Flex => run_flex(job),
        BackendChoice::Ndarray => run_ndarray(job),
        BackendChoice::Candle => run_candle(job),
        BackendChoice::Wgpu => run_wgpu(job),
        BackendChoice::Cuda => run_cuda(job),
    }
}

fn run_cpu<J: BackendJob>(job: J) -> Result<J::Output> {
    if cfg!(feature = "flex") {
        run_flex(job)
    } else if cfg!(feature = "ndarray") {
        run_ndarray(job)
    } else if cfg!(feature = "candle") {
        run_candle(job)
    } else {
        bail!("no CPU backend compiled in: build with --features flex (the default)")
    }
}

fn not_compiled<T>(name: &str) -> Result<T> {
    bail!("backend `{name}` is not compiled in: rebuild with `--features {name}`")
}

fn run_flex<J: BackendJob>(job: J) -> Result<J::Output> {
    #[cfg(feature = "flex")]
    return job.run::<burn::backend::Flex>(Default::default());
    #[cfg(not(feature = "flex"))]
    {
        let _ = job;
        not_compiled("flex")
    }
}

fn run_ndarray<J: BackendJob>(job: J) -> Result<J::Output> {
    #[cfg(feature = "ndarray")]
    return job.run::<burn::backend::NdArray>(Default::default());
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = job;
        not_compiled("ndarray")
    }
}

fn run_candle<J: BackendJob>(job: J) -> Result<J::Output> {
    // Deprecated upstream (burn 0.21), kept opt-in for side-by-side benchmarks.
    #[cfg(feature = "candle")]
    #[allow(deprecated)]
    return job.run::<burn::backend::Candle>(Default::default());
    #[cfg(not(feature = "candle"))]
    {
        let _ = job;
        not_compiled("candle")
    }
}

fn run_wgpu<J: BackendJob>(job: J) -> Result<J::Output> {
    #[cfg(feature = "wgpu")]
    {
        check_wgpu_adapter()?;
        job.run::<burn::backend::Wgpu>(Default::default())
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = job;
        not_compiled("wgpu")
    }
}

/// burn's wgpu runtime panics in its own thread when no adapter exists; look first, so that
/// a machine without a GPU driver gets an error that says what to install.
#[cfg(feature = "wgpu")]
fn check_wgpu_adapter() -> Result<()> {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    let api = AutoGraphicsApi::backend();
    let instance = wgpu_adapters::Instance::new(wgpu_adapters::InstanceDescriptor {
        backends: api.into(),
        ..wgpu_adapters::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(api.into()));
    let Some(adapter) = adapters.first() else {
        bail!(
            "--backend wgpu: no {api:?} adapter found. Install a GPU driver with {api:?} \
             support; on Linux without a GPU, Mesa's software adapter works: \
             `apt-get install libvulkan1 mesa-vulkan-drivers`"
        );
    };
    let info = adapter.get_info();
    tracing::info!(adapter = %info.name, kind = ?info.device_type, driver = %info.driver, "wgpu");
    Ok(())
}

fn run_cuda<J: BackendJob>(job: J) -> Result<J::Output> {
    #[cfg(feature = "cuda")]
    return job.run::<burn::backend::Cuda>(Default::default());
    #[cfg(not(feature = "cuda"))]
    {
        let _ = job;
        not_compiled("cuda")
    }
}
