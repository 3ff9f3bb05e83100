//! `make bench`: placeholder, being written.
fn main() {
    eprintln!("prescore-bench: not written yet");
    std::process::exit(1);
}
