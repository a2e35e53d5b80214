from pixelgate.cli import main

main()
