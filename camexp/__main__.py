from camexp.main import main

main()
