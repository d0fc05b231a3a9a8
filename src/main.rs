fn main() {
    println!("ftpgate {}", env!("CARGO_PKG_VERSION"));
}
