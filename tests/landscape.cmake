flatune_test(test_landscape SOURCES test_landscape.cpp test_util.cpp DEPS flatune_landscape flatune_model flatune_io)
