module example.invalid/ps-e2e-probe

go 1.26
