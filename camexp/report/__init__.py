"""camexp-report: find run folders, tabulate, plot, draw CAMs side by side."""
