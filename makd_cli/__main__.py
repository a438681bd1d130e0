from makd_cli.cli import main

main()
