package org.tflpipe.demo

import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.util.Size
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Toast
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import org.tflpipe.demo.databinding.ActivityMainBinding
import org.tflpipe.imagecore.Classifications
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** Camera preview, live results and the settings panel; all ML work lives in [ImageClassifierHelper]. */
class MainActivity : AppCompatActivity(), ImageClassifierHelper.ClassifierListener {
    private lateinit var binding: ActivityMainBinding
    private lateinit var classifier: ImageClassifierHelper
    private lateinit var analysisExecutor: ExecutorService

    private val permissionRequest =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else binding.statusText.text = getString(R.string.camera_permission_denied)
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        binding = ActivityMainBinding.inflate(layoutInflater)
        setContentView(binding.root)
        analysisExecutor = Executors.newSingleThreadExecutor()
        classifier = ImageClassifierHelper(this, this)
        setUpSettings()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            permissionRequest.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute { classifier.clearImageClassifier() }
        analysisExecutor.shutdown()
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            val rotation = binding.viewFinder.display?.rotation ?: 0
            val preview = Preview.Builder().setTargetRotation(rotation).build()
                .also { it.setSurfaceProvider(binding.viewFinder.surfaceProvider) }
            // Frames stay in the sensor's orientation; imageInfo.rotationDegrees tells the helper how to turn them.
            val analysis = ImageAnalysis.Builder()
                .setResolutionSelector(
                    ResolutionSelector.Builder().setResolutionStrategy(
                        ResolutionStrategy(Size(640, 480), ResolutionStrategy.FALLBACK_RULE_CLOSEST_HIGHER_THEN_LOWER)
                    ).build()
                )
                .setTargetRotation(rotation)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_YUV_420_888)
                .build()
            analysis.setAnalyzer(analysisExecutor) { image -> image.use { classifier.classify(it) } }
            provider.unbindAll()
            try {
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
            } catch (e: Exception) {
                binding.statusText.text = getString(R.string.camera_failed, e.message)
            }
        }, ContextCompat.getMainExecutor(this))
    }

    /** Settings change on the analysis thread, so the interpreter is never rebuilt under a running frame. */
    private fun changeSetting(change: ImageClassifierHelper.() -> Unit) {
        analysisExecutor.execute {
            classifier.change()
            classifier.clearImageClassifier() // rebuilt lazily with the new settings on the next frame
            runOnUiThread { showSettings() }
        }
    }

    private fun setUpSettings() {
        binding.thresholdMinus.setOnClickListener { changeSetting { if (threshold >= 0.1f) threshold -= 0.1f } }
        binding.thresholdPlus.setOnClickListener { changeSetting { if (threshold <= 0.8f) threshold += 0.1f } }
        binding.maxResultsMinus.setOnClickListener { changeSetting { if (maxResults > 1) maxResults-- } }
        binding.maxResultsPlus.setOnClickListener { changeSetting { if (maxResults < 5) maxResults++ } }
        binding.threadsMinus.setOnClickListener { changeSetting { if (numThreads > 1) numThreads-- } }
        binding.threadsPlus.setOnClickListener { changeSetting { if (numThreads < 4) numThreads++ } }
        binding.delegateSpinner.adapter = ArrayAdapter(
            this, android.R.layout.simple_spinner_dropdown_item, ImageClassifierHelper.DELEGATE_NAMES
        )
        binding.delegateSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                binding.statusText.text = ""
                changeSetting { delegate = position }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        showSettings()
    }

    private fun showSettings() {
        binding.thresholdValue.text = String.format(Locale.US, "%.1f", classifier.threshold)
        binding.maxResultsValue.text = classifier.maxResults.toString()
        binding.threadsValue.text = classifier.numThreads.toString()
    }

    override fun onError(message: String) {
        runOnUiThread {
            binding.statusText.text = message
            Toast.makeText(this, message, Toast.LENGTH_LONG).show()
        }
    }

    override fun onDelegateFallback(message: String, usedDelegate: Int) {
        runOnUiThread {
            binding.statusText.text = message
            Toast.makeText(this, message, Toast.LENGTH_LONG).show()
        }
    }

    override fun onResults(results: List<Classifications.Recognition>, timing: ImageClassifierHelper.Timing) {
        val lines = results.joinToString("\n") { String.format(Locale.US, "%.2f  %s", it.score, it.label) }
        runOnUiThread {
            binding.resultsText.text = lines
            binding.timingText.text = getString(
                R.string.timing, timing.inferenceMs, timing.preprocessMs, timing.fps
            )
        }
    }
}
