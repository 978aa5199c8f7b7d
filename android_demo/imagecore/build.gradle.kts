// Pure-JVM image logic shared by the app and tested without Android (see ../README.md).
plugins {
    `java-library`
}

java {
    // Java 11 bytecode and APIs: what Android (minSdk 24 with AGP 8 desugaring) can run.
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

dependencies {
    testImplementation(libs.junit)
}
