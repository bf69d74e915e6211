//! `fusion info`: the runtime libtorch sees.

use anyhow::Result;

use fusion_core::{DeviceChoice, cuda_available, cuda_device_count};

pub fn info(choice: DeviceChoice, json: bool) -> Result<()> {
    let device = choice.resolve()?;
    let report = serde_json::json!({
        "cuda_available": cuda_available(),
        "cuda_devices": cuda_device_count(),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
    });
    if json {
        println!("{report}");
    } else {
        println!("CUDA available: {}", cuda_available());
        println!("CUDA devices:   {}", cuda_device_count());
        println!("device:         {device:?}");
        println!("CPU threads:    {}", tch::get_num_threads());
    }
    Ok(())
}
