//! Generates the tonic stubs from proto/halyard.proto with a vendored protoc, so a fresh
//! machine needs no protobuf-compiler package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/halyard.proto");
    tonic_prost_build::configure().compile_protos(&["proto/halyard.proto"], &["proto"])?;
    Ok(())
}
