from rrsis_geo.cli.main import main

main()
