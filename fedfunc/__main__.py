from fedfunc.cli import main

main()
