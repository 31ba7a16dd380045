flatune_test(test_io SOURCES test_io.cpp test_util.cpp DEPS flatune_model flatune_io)
