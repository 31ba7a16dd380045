flatune_test(test_text SOURCES test_text.cpp test_util.cpp DEPS flatune_text)
