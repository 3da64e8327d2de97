from openpod.entry import main

main()
