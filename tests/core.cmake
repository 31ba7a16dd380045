flatune_test(test_core SOURCES test_core.cpp test_util.cpp DEPS flatune_core)
