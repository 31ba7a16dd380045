flatune_test(test_demo_data SOURCES test_demo_data.cpp test_util.cpp DEPS flatune_demo flatune_data flatune_eval)
