from maestro.cli.main import main

main()
