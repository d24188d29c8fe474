from meetingtasks.cli import main

main()
