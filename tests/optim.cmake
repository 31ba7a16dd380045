flatune_test(test_optim SOURCES test_optim.cpp DEPS flatune_optim)
