//! Runs one hot function N times, for instruction counting under callgrind:
//! `icount decode|decode_python|walk|encode|cdr N`. `bench/callgrind.sh` runs it at two N and divides the
//! difference, so start-up cost cancels out.

use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let bytes = match what.as_str() {
        // A CCR-U written by python-diameter 0.9.0 (520 bytes, 33 AVPs), from the
        // capture in engine/tests/data.
        "decode_python" => gyro_bench::PYTHON_CCR_U.to_vec(),
        _ => gyro_bench::sample_ccr_bytes(),
    };
    let mscc = gyro_bench::sample_answer_mscc();
    let mut out = vec![0u8; 4096];
    let sample = gyro_bench::sample_ccr_bytes();
    let ccr = gyro_bench::decode(&sample).expect("sample decodes");
    let mut sink = 0usize;
    match what.as_str() {
        "decode" | "decode_python" => {
            let mut c = gyro_engine::diameter::ccr::Ccr::default();
            for _ in 0..n {
                gyro_bench::decode_into(black_box(&bytes), &mut c);
                sink += c.mscc_count as usize;
            }
        }
        "walk" => {
            // Only the borrowing view: every AVP at every depth (descending into the
            // Grouped AVPs a CCR has), no dictionary, no value checks.
            for _ in 0..n {
                sink += gyro_bench::walk(black_box(&bytes));
            }
        }
        "cdr" => {
            // One CDR line for the sample CCR-U with its two services.
            let services = gyro_bench::sample_cdr_services();
            for _ in 0..n {
                sink += gyro_bench::write_cdr(black_box(&ccr), black_box(&services), &mut out);
            }
        }
        "encode" => {
            for _ in 0..n {
                sink += gyro_bench::encode_answer(black_box(&ccr), black_box(&mscc), &mut out);
            }
        }
        _ => {
            eprintln!("usage: icount decode|decode_python|walk|encode|cdr N");
            std::process::exit(2);
        }
    }
    black_box(sink);
    println!("{} bytes of CCR, {} runs", bytes.len(), n);
}
