# The ros-* PyPI wheels export CMake targets (std_msgs::std_msgs__rosidl_generator_py, ...)
# whose INTERFACE_INCLUDE_DIRECTORIES name /opt/python/cp311-cp311/... of the machine that built
# the wheels, and CMake's generate step aborts on an imported include directory that does not
# exist. At the end of configuring, keep only the directories that exist (and generator
# expressions). Included only for `pip install` builds (SKBUILD); a ROS distribution is intact.
function(_fix_wheel_py_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc)
      set(_keep "")
      foreach(_d IN LISTS _inc)
        if(_d MATCHES "^\\$<" OR EXISTS "${_d}")
          list(APPEND _keep "${_d}")
        endif()
      endforeach()
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_keep}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _fix_wheel_py_includes)
