flatune_test(test_model SOURCES test_model.cpp test_util.cpp DEPS flatune_model flatune_io)
