flatune_test(test_data SOURCES test_data.cpp test_util.cpp DEPS flatune_data flatune_model)
