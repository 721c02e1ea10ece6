# Install rules: the static library, the public headers and a CMake package, so a
# host can find_package(canopy CONFIG) after `cmake --install build --prefix P`.
# Included from the root CMakeLists.txt when CANOPY_INSTALL is on.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CANOPY_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/canopy)

set_target_properties(canopy PROPERTIES EXPORT_NAME canopy)  # canopy::canopy
install(TARGETS canopy EXPORT canopyTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/canopy
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
install(EXPORT canopyTargets NAMESPACE canopy:: FILE canopyTargets.cmake
        DESTINATION ${CANOPY_CMAKE_DIR})

# error.hpp puts fmt's inline code into the host's translation units and the
# library holds its own copies: the host must use the same fmt major version.
math(EXPR CANOPY_FMT_NEXT_MAJOR "${fmt_VERSION_MAJOR} + 1")
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/canopyConfig.cmake.in
  ${PROJECT_BINARY_DIR}/canopyConfig.cmake
  INSTALL_DESTINATION ${CANOPY_CMAKE_DIR})
# 0.x: a new minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/canopyConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/canopyConfig.cmake ${PROJECT_BINARY_DIR}/canopyConfigVersion.cmake
        DESTINATION ${CANOPY_CMAKE_DIR})

# Tuning databases made by canopy-tune (docs/tuning.md), searched by the Runtime.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/autotune/databases/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/canopy/tuning
        FILES_MATCHING PATTERN "*.json")
