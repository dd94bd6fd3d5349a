fn main() -> anyhow::Result<()> {
    dace::cli::main()
}
