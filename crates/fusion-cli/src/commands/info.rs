//! `fusion info`: the runtime libtorch sees.

use anyhow::Result;

use fusion_core::{DeviceChoice, cuda_available, cuda_device_count};

use crate::ui::print_line;

pub fn info(choice: DeviceChoice, json: bool) -> Result<()> {
    let device = choice.resolve()?;
    let report = serde_json::json!({
        "cuda_available": cuda_available(),
        "cuda_devices": cuda_device_count(),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
    });
    let out = &mut std::io::stdout().lock();
    if json {
        print_line(out, &report);
    } else {
        print_line(out, &format!("CUDA available: {}", cuda_available()));
        print_line(out, &format!("CUDA devices:   {}", cuda_device_count()));
        print_line(out, &format!("device:         {device:?}"));
        print_line(out, &format!("CPU threads:    {}", tch::get_num_threads()));
    }
    Ok(())
}
